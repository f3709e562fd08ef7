// The AVX2 + FMA path. The target region (not -mavx2 on the command line) keeps every
// library template and inline function outside it compiled for baseline x86-64, so one
// build runs everywhere; this code only runs after CPUID says AVX2 and FMA are usable.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "codec_kernels.hpp"
#include "erfc_coeffs.hpp"
#include "kernels.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
namespace pgrid::avx2 {
// clang-format off: the order matters (the kernels use the vector types).
#include "simd_avx2.hpp"
#include "kernel_impl.hpp"
#include "codec_impl.hpp"
// clang-format on
}  // namespace pgrid::avx2
#pragma GCC pop_options

PGRID_KERNEL_TABLE(avx2)
PGRID_CODEC_TABLE(avx2)
