// The scalar path: baseline x86-64 (or any architecture), one lane. CMake builds this
// file without auto-vectorisation so that "vs scalar" speed-ups are honest.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "codec_kernels.hpp"
#include "erfc_coeffs.hpp"
#include "kernels.hpp"

namespace pgrid::scalar {
// clang-format off: the order matters (the kernels use the vector types).
#include "simd_scalar.hpp"
#include "kernel_impl.hpp"
#include "codec_impl.hpp"
// clang-format on
}  // namespace pgrid::scalar

PGRID_KERNEL_TABLE(scalar)
PGRID_CODEC_TABLE(scalar)
