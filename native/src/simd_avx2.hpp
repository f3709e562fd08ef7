// AVX2 + FMA vector types for the kernel (included inside a target("avx2,fma") region).
#pragma once
// Included inside namespace pgrid::<isa>; the TU includes <immintrin.h>, <cmath> first.

#define PGRID_INLINE inline __attribute__((always_inline))

struct VF {  // 8 floats
    static constexpr int W = 8;
    __m256 v;
    static PGRID_INLINE VF zero() { return {_mm256_setzero_ps()}; }
    static PGRID_INLINE VF set1(float x) { return {_mm256_set1_ps(x)}; }
    static PGRID_INLINE VF load(const float* p) { return {_mm256_loadu_ps(p)}; }
    PGRID_INLINE void store(float* p) const { _mm256_storeu_ps(p, v); }
    PGRID_INLINE void stream(float* p) const { _mm256_stream_ps(p, v); }  // p 32-byte aligned
    PGRID_INLINE float sum() const {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static PGRID_INLINE __m256i lanes_below(int n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    /// First n lanes (0 < n < W) from p, the rest zero; never touches p[n..].
    static PGRID_INLINE VF load_n(const float* p, int n) {
        return {_mm256_maskload_ps(p, lanes_below(n))};
    }
    /// Store the first n lanes (0 < n < W).
    PGRID_INLINE void store_n(float* p, int n) const { _mm256_maskstore_ps(p, lanes_below(n), v); }
};
PGRID_INLINE VF operator+(VF a, VF b) { return {_mm256_add_ps(a.v, b.v)}; }
PGRID_INLINE VF operator-(VF a, VF b) { return {_mm256_sub_ps(a.v, b.v)}; }
PGRID_INLINE VF operator*(VF a, VF b) { return {_mm256_mul_ps(a.v, b.v)}; }
PGRID_INLINE VF operator/(VF a, VF b) { return {_mm256_div_ps(a.v, b.v)}; }
PGRID_INLINE VF fnmadd(VF a, VF b, VF c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
PGRID_INLINE VF vabs(VF a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
PGRID_INLINE VF vmin(VF a, VF b) { return {_mm256_min_ps(a.v, b.v)}; }
PGRID_INLINE VF vmax(VF a, VF b) { return {_mm256_max_ps(a.v, b.v)}; }
PGRID_INLINE VF vround(VF a) {
    return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
/// a * 2^n for integral-valued n with -126 <= n <= 127.
PGRID_INLINE VF vldexp(VF a, VF n) {
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
    return {_mm256_mul_ps(a.v, _mm256_castsi256_ps(e))};
}
/// x > y ? a : b
PGRID_INLINE VF select_gt(VF x, VF y, VF a, VF b) {
    return {_mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(x.v, y.v, _CMP_GT_OQ))};
}
/// 1/a to float precision: 12-bit estimate and one Newton step.
PGRID_INLINE VF vrcp(VF a) {
    const __m256 r = _mm256_rcp_ps(a.v);
    return {_mm256_mul_ps(r, _mm256_fnmadd_ps(a.v, r, _mm256_set1_ps(2.0f)))};
}
/// Lanes 1..W-1 of a, then lane 0 of b: the vector one element further along.
PGRID_INLINE VF shift_in(VF a, VF b) {
    const __m256i rot = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    return {_mm256_blend_ps(_mm256_permutevar8x32_ps(a.v, rot), _mm256_permutevar8x32_ps(b.v, rot),
                            0x80)};
}
/// 0, 1, 2, ... W-1
PGRID_INLINE VF iota() { return {_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7)}; }
PGRID_INLINE VF fmadd(VF a, VF b, VF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
/// a <= b ? x : 0, lane by lane
PGRID_INLINE VF select_le(VF a, VF b, VF x) {
    return {_mm256_and_ps(_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ), x.v)};
}

struct VD {  // 4 doubles
    static constexpr int W = 4;
    __m256d v;
    static PGRID_INLINE VD set1(double x) { return {_mm256_set1_pd(x)}; }
    static PGRID_INLINE VD load(const double* p) { return {_mm256_loadu_pd(p)}; }
    PGRID_INLINE void store(double* p) const { _mm256_storeu_pd(p, v); }
};
PGRID_INLINE VD operator+(VD a, VD b) { return {_mm256_add_pd(a.v, b.v)}; }
PGRID_INLINE VD operator-(VD a, VD b) { return {_mm256_sub_pd(a.v, b.v)}; }
PGRID_INLINE VD operator*(VD a, VD b) { return {_mm256_mul_pd(a.v, b.v)}; }
PGRID_INLINE VD operator/(VD a, VD b) { return {_mm256_div_pd(a.v, b.v)}; }
PGRID_INLINE VD fmadd(VD a, VD b, VD c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
PGRID_INLINE VD fnmadd(VD a, VD b, VD c) { return {_mm256_fnmadd_pd(a.v, b.v, c.v)}; }
PGRID_INLINE VD vabs(VD a) { return {_mm256_andnot_pd(_mm256_set1_pd(-0.0), a.v)}; }
PGRID_INLINE VD vmin(VD a, VD b) { return {_mm256_min_pd(a.v, b.v)}; }
PGRID_INLINE VD vmax(VD a, VD b) { return {_mm256_max_pd(a.v, b.v)}; }
PGRID_INLINE VD vround(VD a) {
    return {_mm256_round_pd(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
/// a * 2^n for integral-valued n with -1022 <= n <= 1023.
PGRID_INLINE VD vldexp(VD a, VD n) {
    // n + 1.5*2^52 puts the integer in the low mantissa bits; move it to the exponent.
    const __m256d magic = _mm256_set1_pd(6755399441055744.0);
    __m256i bits = _mm256_castpd_si256(_mm256_add_pd(n.v, magic));
    bits = _mm256_sub_epi64(bits, _mm256_castpd_si256(magic));
    bits = _mm256_slli_epi64(_mm256_add_epi64(bits, _mm256_set1_epi64x(1023)), 52);
    return {_mm256_mul_pd(a.v, _mm256_castsi256_pd(bits))};
}
/// x > y ? a : b
PGRID_INLINE VD select_gt(VD x, VD y, VD a, VD b) {
    return {_mm256_blendv_pd(b.v, a.v, _mm256_cmp_pd(x.v, y.v, _CMP_GT_OQ))};
}

PGRID_INLINE void store_fence() { _mm_sfence(); }
inline constexpr int kStreamAlign = 32;
