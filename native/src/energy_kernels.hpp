// The per-ISA inner loop of the Lennard-Jones grid (energy.cpp): energy_impl.hpp compiled
// three times (scalar, AVX2, AVX-512), each in its own namespace and target region.
#pragma once

#include <cstdint>

namespace pgrid::detail {

/// Candidate atom images of one tile of points, structure of arrays, padded to a multiple
/// of kLjPad with images that lie beyond any cutoff (sig2 = eps4 = 0).
struct LjCandidates {
    const double* x;
    const double* y;
    const double* z;
    const double* sig2;  ///< sigma^2, Angstrom^2
    const double* eps4;  ///< 4 epsilon, K
    std::int64_t n;      ///< a multiple of kLjPad
};

/// Candidate arrays are padded to a multiple of this (every ISA's double width divides it).
inline constexpr int kLjPad = 8;

/// (sigma/r)^2 is capped at this, so that an atom on a grid point gives a huge finite
/// energy (clipped later) instead of inf or NaN: (1e20)^6 * 4e12 stays far below DBL_MAX.
inline constexpr double kLjMaxS2 = 1e20;

struct EnergyKernels {
    const char* name;
    /// e[p] = sum over candidates with r^2 <= rc2 of eps4 (s^12 - s^6), s^2 = min(sig2 / r^2,
    /// kLjMaxS2), for the n_points points (x, y, z interleaved) in pts; float64 throughout.
    void (*lj_points)(const LjCandidates& c, const double* pts, int n_points, double rc2,
                      double* e);
};

const EnergyKernels& energy_kernels_scalar();
const EnergyKernels& energy_kernels_avx2();
const EnergyKernels& energy_kernels_avx512();

}  // namespace pgrid::detail

#define PGRID_ENERGY_TABLE(ns)                                     \
    namespace pgrid::detail {                                      \
    const EnergyKernels& energy_kernels_##ns() {                   \
        static const EnergyKernels k{#ns, ::pgrid::ns::lj_points}; \
        return k;                                                  \
    }                                                              \
    }
