// The AVX-512 Lennard-Jones loop, in a target region (see kernel_avx512.cpp).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "energy_kernels.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt")
namespace pgrid::avx512 {
// clang-format off: the order matters (the loop uses the vector types).
#include "simd_avx512.hpp"
#include "energy_impl.hpp"
// clang-format on
}  // namespace pgrid::avx512
#pragma GCC pop_options

PGRID_ENERGY_TABLE(avx512)
