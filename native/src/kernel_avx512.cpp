// The AVX-512 path. The target region (not -mavx512f on the command line) keeps every
// library template and inline function outside it compiled for baseline x86-64, so one
// build runs everywhere; this code only runs after CPUID says AVX-512 is usable.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "codec_kernels.hpp"
#include "erfc_coeffs.hpp"
#include "kernels.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt")
namespace pgrid::avx512 {
// clang-format off: the order matters (the kernels use the vector types).
#include "simd_avx512.hpp"
#include "kernel_impl.hpp"
#include "codec_impl.hpp"
// clang-format on
}  // namespace pgrid::avx512
#pragma GCC pop_options

PGRID_KERNEL_TABLE(avx512)
PGRID_CODEC_TABLE(avx512)
