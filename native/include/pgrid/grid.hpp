// pgrid: exact Gaussian density grids of atoms (SPEC §1-§3).
//
// A pure C++17 core: no Python, no file I/O. Callers pass atoms in a CSR layout
// (structure s owns atoms [offsets[s], offsets[s+1])), one box per structure, and a
// caller-sized float32 output of shape (B, C, nx, ny, nz); the kernel fills it.
//
// value[c,i,j,k] = sum over atoms a in channel c of w_a * integral over voxel (i,j,k)
// of N(r; mu_a, sigma_a^2 I) dr, plus every lattice image for periodic boxes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pgrid {

/// Instruction-set paths compiled into the library. One build carries all three; the
/// best one the CPU (and OS) supports is chosen at run time.
enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

/// Truncation radius in units of sigma. Each atom is evaluated on the voxels whose
/// extent along an axis comes within kTruncSigmas*sigma of the atom; the density left
/// out beyond that is 0.5*erfc(6/sqrt 2) = 9.9e-10 per half-axis, so a voxel's error
/// from truncation is <= 1e-9 per atom, well inside the SPEC's 1e-6 budget.
inline constexpr double kTruncSigmas = 6.0;

/// Truncation radius (in sigma) for triclinic cells, whose tolerance is relative (1e-4 of
/// the grid maximum): voxels whose nearest point is farther than 5.5 sigma from an atom are
/// skipped. Each such voxel holds < 0.5*erfc(5.5/sqrt 2) = 1.9e-8 of the atom, and the
/// mass left out is P(chi_3 > 5.5) = 1.2e-6 of it (the SPEC's sums hold to 1e-5).
inline constexpr double kTricTruncSigmas = 5.5;

/// Periodic images considered per axis are bounded: a cell much smaller than the
/// Gaussian (kTruncSigmas*sigma spans more than this many cells) is rejected.
inline constexpr int kMaxImageSpan = 64;

// ------------------------------------------------------------------ the input domain
// validate() rejects, with a message naming the argument, structure and atom, anything
// outside these bounds; inside them every result is finite and every index fits its type.

/// Narrowest Gaussian, in Angstrom. Orthogonal boxes are exact down to a point mass (the
/// separable factors become 0, 1/2 or 1), but nothing physical is this narrow and a
/// smaller sigma is a unit mistake. Triclinic cells need more: sigma at least the voxel
/// edge / max_triclinic_h_over_sigma() (the quadrature's limit, ~83.7).
inline constexpr double kMinSigma = 1e-6;

/// Widest Gaussian, in Angstrom: the squared truncation radius stays finite.
inline constexpr double kMaxSigma = 1e100;

/// Farthest an atom may be from its box origin along any Cartesian axis, in Angstrom, so
/// that projections and distances stay finite. (A periodic cell also needs the atom's
/// fractional coordinates below 2^52 in magnitude: beyond, its place in the cell is not
/// representable.)
inline constexpr double kMaxDistance = 1e300;

/// Largest sum of |weight| over the atoms of one channel of one structure (2^116 = 8.3e34).
/// A voxel holds at most that sum, and float32 tops out at 2^128 = 3.4e38; the margin of
/// 2^12 keeps the triclinic quadrature's intermediate products (weight times a node's
/// density, up to ~1e3 per unit weight) finite.
inline constexpr double kMaxWeightSum = 0x1p116;

/// Most voxels along one axis (and most channels). Periodic windows unwrap voxel indices
/// over up to kMaxImageSpan cells in int32, and the triclinic kernels index a row in
/// float32, exact up to 2^24.
inline constexpr int kMaxAxisVoxels = 1 << 24;

/// Most worker threads one call may ask for.
inline constexpr int kMaxThreads = 1024;

/// Atoms and boxes of a batch of structures. All pointers are borrowed.
struct BatchInput {
    const double* positions = nullptr;       ///< (M, 3) Cartesian, Angstrom
    const std::int64_t* offsets = nullptr;   ///< (B + 1), offsets[0] = 0, offsets[B] = M
    const std::int32_t* channels = nullptr;  ///< (M) channel index in [0, n_channels)
    const double* sigmas = nullptr;          ///< (M) Gaussian standard deviation, Angstrom
    const double* weights = nullptr;         ///< (M) weight of each atom
    const double* origins = nullptr;         ///< (B, 3) corner of voxel (0,0,0), Angstrom
    const double* axes = nullptr;            ///< (B, 3, 3) rows a, b, c: box edge vectors, Angstrom
    const std::uint8_t* periodic = nullptr;  ///< (B) 1 for a periodic cell
    std::int64_t n_structures = 0;           ///< B
    std::int64_t n_atoms = 0;                ///< M (must equal offsets[B])
    int n_channels = 1;                      ///< C
    int shape[3] = {1, 1, 1};                ///< nx, ny, nz
};

struct Options {
    int threads = 0;        ///< worker threads; <= 0 means all hardware threads (and at
                            ///< most one per work item is started)
    Isa isa = Isa::scalar;  ///< path to use (must be supported; see best_isa())
    /// Non-temporal (streaming) stores for the output: -1 automatic (used when the
    /// output is larger than the last-level cache), 0 never, 1 always.
    int streaming = -1;
};

/// Fill out[B, C, nx, ny, nz] (float32, C-contiguous) with the densities.
/// Throws std::invalid_argument (with a message naming the structure/atom) on bad
/// input; out is then left unspecified. Output is identical for every thread count.
void grid_batch(const BatchInput& in, float* out, const Options& opt);

/// The molecule box policies of a recipe (pgrid_cli.core.box): fit, tight, cube:L.
enum class BoxKind : int { fit = 0, tight = 1, cube = 2 };

/// A recipe's batch: atoms by atomic number, boxes still to be placed (grid_recipe).
struct RecipeInput {
    const double* positions = nullptr;              ///< (M, 3) Cartesian, Angstrom
    const std::int64_t* offsets = nullptr;          ///< (B + 1)
    const std::int32_t* numbers32 = nullptr;        ///< (M) atomic numbers (this or numbers64)
    const std::int64_t* numbers64 = nullptr;        ///< (M) atomic numbers
    const double* lattices = nullptr;               ///< (B, 3, 3) cells, or null: molecules
    const std::uint8_t* periodic = nullptr;         ///< (B) which use their cell (null: all)
    const double* weights = nullptr;                ///< (M), or null for all ones
    const std::int32_t* element_channel = nullptr;  ///< (table_size) channel of Z, -1 none
    int table_size = 0;
    int n_channels = 1;
    double sigma = 0.5;  ///< Angstrom, every atom
    BoxKind box_kind = BoxKind::fit;
    double padding = 2.0;       ///< Angstrom, fit and tight
    double cube_side = 0.0;     ///< Angstrom, cube
    double outside_limit = -1;  ///< cube: atoms farther outside are an error (< 0: no check)
    std::int64_t n_structures = 0;
    std::int64_t n_atoms = 0;
    int shape[3] = {1, 1, 1};
};

/// Place each structure's box (its cell if periodic, else the molecule box of
/// in.box_kind, bitwise as pgrid_cli's Box.fit / tight / cube / from_lattice), write it to
/// origins (B, 3) and axes (B, 3, 3), assign channels from the element table, and grid
/// the batch into out as grid_batch does. Throws std::invalid_argument naming the
/// structure (and atom) at fault.
/// Bounding box of n >= 1 atoms (positions (n, 3), Å) into lo[3] and hi[3]; false if a
/// coordinate is NaN or infinite.
bool atom_bounds(const double* positions, std::int64_t n, double* lo, double* hi);

void grid_recipe(const RecipeInput& in, float* out, double* origins, double* axes,
                 const Options& opt);

/// Gradient of L = sum(dgrid * grid) with respect to positions and weights.
/// dgrid has the output's shape; dpositions is (M, 3), dweights is (M) (may be null).
void grid_gradient_batch(const BatchInput& in, const float* dgrid, double* dpositions,
                         double* dweights, const Options& opt);

/// Check a batch against the input domain above; throws std::invalid_argument with a
/// message naming the argument (and structure, atom and array index) at fault.
void validate(const BatchInput& in);

/// Check an output of B structures x C channels x (nx, ny, nz) voxels: every extent at
/// least 1 (B at least 0), C and each axis at most kMaxAxisVoxels, and B*C*nx*ny*nz floats
/// addressable. `what` names the array in the message ("out", "dgrid", "grid").
void check_grid_shape(std::int64_t n_structures, std::int64_t n_channels,
                      const std::int64_t shape[3], const char* what);

/// Zero `count` floats with the same threading as grid_batch: the memory-bound floor
/// the benchmarks compare against.
void zero_fill(float* out, std::size_t count, int threads);

/// Standard normal cdf (and pdf, if non-null) exactly as the kernel evaluates them.
void normal_cdf(const double* t, std::size_t n, double* cdf, double* pdf, Isa isa);

/// Instruction sets this CPU and OS can run, best last.
std::vector<Isa> supported_isas();
/// The best supported instruction set.
Isa best_isa();
/// "scalar", "avx2" or "avx512".
const char* isa_name(Isa isa);
/// Parse an ISA name; throws std::invalid_argument for unknown names.
Isa parse_isa(const std::string& name);

/// Number of hardware threads (at least 1).
int hardware_threads();

/// Most quadrature nodes per direction of a triclinic voxel (16 composite 8-node panels).
inline constexpr int kMaxQuadratureNodes = 128;

/// Gauss-Legendre nodes used along each of the two quadrature directions of a triclinic
/// voxel whose largest edge is `h_over_sigma` sigmas long (one rule up to 16 nodes, then
/// composite 8-node panels); throws std::invalid_argument past kMaxQuadratureNodes (an
/// edge longer than max_triclinic_h_over_sigma()) or for a negative or NaN argument.
int triclinic_quadrature_order(double h_over_sigma);

/// Longest triclinic voxel edge, in sigmas, that kMaxQuadratureNodes nodes integrate
/// (16 panels of 8 nodes: 83.68).
double max_triclinic_h_over_sigma();

}  // namespace pgrid
