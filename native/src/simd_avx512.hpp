// AVX-512 vector types for the kernel (included inside a target("avx512...") region).
#pragma once
// Included inside namespace pgrid::<isa>; the TU includes <immintrin.h>, <cmath> first.

#define PGRID_INLINE inline __attribute__((always_inline))

struct VF {  // 16 floats
    static constexpr int W = 16;
    __m512 v;
    static PGRID_INLINE VF zero() { return {_mm512_setzero_ps()}; }
    static PGRID_INLINE VF set1(float x) { return {_mm512_set1_ps(x)}; }
    static PGRID_INLINE VF load(const float* p) { return {_mm512_loadu_ps(p)}; }
    PGRID_INLINE void store(float* p) const { _mm512_storeu_ps(p, v); }
    PGRID_INLINE void stream(float* p) const { _mm512_stream_ps(p, v); }  // p 64-byte aligned
    PGRID_INLINE float sum() const { return _mm512_reduce_add_ps(v); }
    /// First n lanes (0 < n < W) from p, the rest zero; never touches p[n..].
    static PGRID_INLINE VF load_n(const float* p, int n) {
        return {_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p)};
    }
    /// Store the first n lanes (0 < n < W).
    PGRID_INLINE void store_n(float* p, int n) const {
        _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
    }
};
PGRID_INLINE VF operator+(VF a, VF b) { return {_mm512_add_ps(a.v, b.v)}; }
PGRID_INLINE VF operator-(VF a, VF b) { return {_mm512_sub_ps(a.v, b.v)}; }
PGRID_INLINE VF operator*(VF a, VF b) { return {_mm512_mul_ps(a.v, b.v)}; }
PGRID_INLINE VF operator/(VF a, VF b) { return {_mm512_div_ps(a.v, b.v)}; }
PGRID_INLINE VF fnmadd(VF a, VF b, VF c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }
PGRID_INLINE VF vabs(VF a) { return {_mm512_abs_ps(a.v)}; }
PGRID_INLINE VF vmin(VF a, VF b) { return {_mm512_min_ps(a.v, b.v)}; }
PGRID_INLINE VF vmax(VF a, VF b) { return {_mm512_max_ps(a.v, b.v)}; }
PGRID_INLINE VF vround(VF a) {
    return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
/// a * 2^n for integral-valued n.
PGRID_INLINE VF vldexp(VF a, VF n) { return {_mm512_scalef_ps(a.v, n.v)}; }
/// x > y ? a : b
PGRID_INLINE VF select_gt(VF x, VF y, VF a, VF b) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, y.v, _CMP_GT_OQ), b.v, a.v)};
}
/// 1/a to float precision: 14-bit estimate and one Newton step.
PGRID_INLINE VF vrcp(VF a) {
    const __m512 r = _mm512_rcp14_ps(a.v);
    return {_mm512_mul_ps(r, _mm512_fnmadd_ps(a.v, r, _mm512_set1_ps(2.0f)))};
}
/// Lanes 1..W-1 of a, then lane 0 of b: the vector one element further along.
PGRID_INLINE VF shift_in(VF a, VF b) {
    return {_mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(b.v), _mm512_castps_si512(a.v), 1))};
}
/// 0, 1, 2, ... W-1
PGRID_INLINE VF iota() {
    return {_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)};
}
PGRID_INLINE VF fmadd(VF a, VF b, VF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
/// a <= b ? x : 0, lane by lane
PGRID_INLINE VF select_le(VF a, VF b, VF x) {
    return {_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ), x.v)};
}

struct VD {  // 8 doubles
    static constexpr int W = 8;
    __m512d v;
    static PGRID_INLINE VD set1(double x) { return {_mm512_set1_pd(x)}; }
    static PGRID_INLINE VD load(const double* p) { return {_mm512_loadu_pd(p)}; }
    PGRID_INLINE void store(double* p) const { _mm512_storeu_pd(p, v); }
};
PGRID_INLINE VD operator+(VD a, VD b) { return {_mm512_add_pd(a.v, b.v)}; }
PGRID_INLINE VD operator-(VD a, VD b) { return {_mm512_sub_pd(a.v, b.v)}; }
PGRID_INLINE VD operator*(VD a, VD b) { return {_mm512_mul_pd(a.v, b.v)}; }
PGRID_INLINE VD operator/(VD a, VD b) { return {_mm512_div_pd(a.v, b.v)}; }
PGRID_INLINE VD fmadd(VD a, VD b, VD c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }
PGRID_INLINE VD fnmadd(VD a, VD b, VD c) { return {_mm512_fnmadd_pd(a.v, b.v, c.v)}; }
PGRID_INLINE VD vabs(VD a) { return {_mm512_abs_pd(a.v)}; }
PGRID_INLINE VD vmin(VD a, VD b) { return {_mm512_min_pd(a.v, b.v)}; }
PGRID_INLINE VD vmax(VD a, VD b) { return {_mm512_max_pd(a.v, b.v)}; }
PGRID_INLINE VD vround(VD a) {
    return {_mm512_roundscale_pd(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
/// a * 2^n for integral-valued n.
PGRID_INLINE VD vldexp(VD a, VD n) { return {_mm512_scalef_pd(a.v, n.v)}; }
/// x > y ? a : b
PGRID_INLINE VD select_gt(VD x, VD y, VD a, VD b) {
    __mmask8 m = _mm512_cmp_pd_mask(x.v, y.v, _CMP_GT_OQ);
    return {_mm512_mask_blend_pd(m, b.v, a.v)};
}

PGRID_INLINE void store_fence() { _mm_sfence(); }
inline constexpr int kStreamAlign = 64;
