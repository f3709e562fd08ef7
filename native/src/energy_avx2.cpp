// The AVX2 Lennard-Jones loop, in a target region (see kernel_avx2.cpp).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "energy_kernels.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
namespace pgrid::avx2 {
// clang-format off: the order matters (the loop uses the vector types).
#include "simd_avx2.hpp"
#include "energy_impl.hpp"
// clang-format on
}  // namespace pgrid::avx2
#pragma GCC pop_options

PGRID_ENERGY_TABLE(avx2)
