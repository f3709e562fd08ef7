// The scalar Lennard-Jones loop (built without auto-vectorisation, like kernel_scalar.cpp).
#include <cmath>
#include <cstdint>

#include "energy_kernels.hpp"

namespace pgrid::scalar {
// clang-format off: the order matters (the loop uses the vector types).
#include "simd_scalar.hpp"
#include "energy_impl.hpp"
// clang-format on
}  // namespace pgrid::scalar

PGRID_ENERGY_TABLE(scalar)
