// Scalar "vector" types: one lane, plain C++ arithmetic. The baseline path; built
// without auto-vectorisation so it is an honest scalar reference for speed-ups.
#pragma once
// Included inside namespace pgrid::<isa>; the TU includes <immintrin.h>, <cmath> first.

#define PGRID_INLINE inline __attribute__((always_inline))

struct VF {
    static constexpr int W = 1;
    float v;
    static PGRID_INLINE VF zero() { return {0.0f}; }
    static PGRID_INLINE VF set1(float x) { return {x}; }
    static PGRID_INLINE VF load(const float* p) { return {*p}; }
    PGRID_INLINE void store(float* p) const { *p = v; }
    PGRID_INLINE void stream(float* p) const { *p = v; }
    PGRID_INLINE float sum() const { return v; }
    static PGRID_INLINE VF load_n(const float* p, int) { return {*p}; }  // W = 1: never partial
    PGRID_INLINE void store_n(float* p, int) const { *p = v; }
};
PGRID_INLINE VF operator+(VF a, VF b) { return {a.v + b.v}; }
PGRID_INLINE VF operator-(VF a, VF b) { return {a.v - b.v}; }
PGRID_INLINE VF operator*(VF a, VF b) { return {a.v * b.v}; }
PGRID_INLINE VF operator/(VF a, VF b) { return {a.v / b.v}; }
PGRID_INLINE VF fnmadd(VF a, VF b, VF c) { return {c.v - a.v * b.v}; }
PGRID_INLINE VF vabs(VF a) { return {std::fabs(a.v)}; }
PGRID_INLINE VF vmin(VF a, VF b) { return {a.v < b.v ? a.v : b.v}; }
PGRID_INLINE VF vmax(VF a, VF b) { return {a.v > b.v ? a.v : b.v}; }
PGRID_INLINE VF vround(VF a) { return {std::nearbyint(a.v)}; }
PGRID_INLINE VF vldexp(VF a, VF n) { return {std::ldexp(a.v, static_cast<int>(n.v))}; }
PGRID_INLINE VF select_gt(VF x, VF y, VF a, VF b) { return x.v > y.v ? a : b; }
PGRID_INLINE VF iota() { return {0.0f}; }
PGRID_INLINE VF vrcp(VF a) { return {1.0f / a.v}; }
PGRID_INLINE VF shift_in(VF, VF b) { return b; }
PGRID_INLINE VF fmadd(VF a, VF b, VF c) { return {a.v * b.v + c.v}; }
PGRID_INLINE VF select_le(VF a, VF b, VF x) { return {a.v <= b.v ? x.v : 0.0f}; }

struct VD {
    static constexpr int W = 1;
    double v;
    static PGRID_INLINE VD set1(double x) { return {x}; }
    static PGRID_INLINE VD load(const double* p) { return {*p}; }
    PGRID_INLINE void store(double* p) const { *p = v; }
};
PGRID_INLINE VD operator+(VD a, VD b) { return {a.v + b.v}; }
PGRID_INLINE VD operator-(VD a, VD b) { return {a.v - b.v}; }
PGRID_INLINE VD operator*(VD a, VD b) { return {a.v * b.v}; }
PGRID_INLINE VD operator/(VD a, VD b) { return {a.v / b.v}; }
PGRID_INLINE VD fmadd(VD a, VD b, VD c) { return {a.v * b.v + c.v}; }
PGRID_INLINE VD fnmadd(VD a, VD b, VD c) { return {c.v - a.v * b.v}; }
PGRID_INLINE VD vabs(VD a) { return {std::fabs(a.v)}; }
PGRID_INLINE VD vmin(VD a, VD b) { return {a.v < b.v ? a.v : b.v}; }
PGRID_INLINE VD vmax(VD a, VD b) { return {a.v > b.v ? a.v : b.v}; }
PGRID_INLINE VD vround(VD a) { return {std::nearbyint(a.v)}; }
PGRID_INLINE VD vldexp(VD a, VD n) { return {std::ldexp(a.v, static_cast<int>(n.v))}; }
PGRID_INLINE VD select_gt(VD x, VD y, VD a, VD b) { return x.v > y.v ? a : b; }

PGRID_INLINE void store_fence() {}
inline constexpr int kStreamAlign = 1;
