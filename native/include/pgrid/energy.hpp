// pgrid: Lennard-Jones energy grids of a probe in a framework (issue 14, item 4).
//
// A pure C++17 core: no Python, no file I/O, caller-sized output. For every grid point
//   p(i, j, k) = origin + i*steps[0] + j*steps[1] + k*steps[2]
// E(p) = min(max_energy, sum over atoms a (and, with a lattice, every lattice image of a)
// with |p - r_a| <= cutoff of 4 eps_a ((sigma_a/r)^12 - (sigma_a/r)^6)), in K, where sigma_a
// (Angstrom) and eps_a (K) are already mixed with the probe. Every image within the cutoff
// counts (not the minimum image), so cells smaller than twice the cutoff are right too.
#pragma once

#include <cstdint>

#include "pgrid/grid.hpp"

namespace pgrid {

/// Largest cutoff, Angstrom.
inline constexpr double kMaxLjCutoff = 1e4;
/// Widest LJ sigma, Angstrom (a larger one is a unit mistake).
inline constexpr double kMaxLjSigma = 1e3;
/// Largest LJ well depth, K.
inline constexpr double kMaxLjEpsilon = 1e12;
/// Largest clip value, K (stays a finite float32).
inline constexpr double kMaxLjClip = 1e30;
/// Farthest an atom or a grid point may be from the origin per axis, Angstrom.
inline constexpr double kMaxLjDistance = 1e9;
/// Most atom images (atoms and lattice translations within the cutoff of the grid's
/// bounding box) one call may hold: 2^23 images use ~0.75 GB; a cell whose heights are
/// much smaller than the cutoff is rejected rather than enumerated.
inline constexpr std::int64_t kMaxLjImages = std::int64_t{1} << 23;

struct EnergyInput {
    const double* positions = nullptr;  ///< (M, 3) Cartesian, Angstrom
    const double* sigmas = nullptr;     ///< (M) LJ sigma mixed with the probe, Angstrom, > 0
    const double* epsilons = nullptr;   ///< (M) LJ epsilon mixed with the probe, K, >= 0
    std::int64_t n_atoms = 0;           ///< M (0 allowed: the grid is zero)
    const double* lattice = nullptr;    ///< (3, 3) rows a, b, c, Angstrom; null: open boundary
    double origin[3] = {0, 0, 0};       ///< grid point (0, 0, 0), Angstrom
    double steps[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};  ///< rows: one step along i, j, k
    int shape[3] = {1, 1, 1};                                ///< nx, ny, nz
    double cutoff = 12.0;                                    ///< Angstrom, > 0
    double max_energy = 1e4;                                 ///< K: values above are clipped to it
};

/// Check `in` (finite values, sigma > 0, eps >= 0, cutoff > 0, sizes, the image count);
/// throws std::invalid_argument naming the argument (and atom) at fault.
void validate_energy(const EnergyInput& in);

/// Fill out (nx, ny, nz) float32, C-contiguous, with E in K (accumulated in float64).
/// Cell lists over the atom images, SIMD over atoms, threads over tiles of points; the
/// result does not depend on the thread count. Throws std::invalid_argument on bad input.
void lj_energy_grid(const EnergyInput& in, float* out, const Options& opt);

}  // namespace pgrid
