// Plain-data plans shared by the common code (which builds them) and the per-ISA
// kernels (which only read them through raw pointers). Nothing here allocates, so no
// library template is ever instantiated inside an ISA-specific target region.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pgrid::detail {

// ------------------------------------------------------------------ orthogonal boxes
/// A contiguous run of z factors along a row, stored zero-padded to whole vectors.
struct ZSeg {
    std::int32_t k0;    ///< first k of the run
    std::int32_t len;   ///< voxels in the run
    std::int32_t nvec;  ///< vectors stored: ceil(len / width)
    std::int64_t off;   ///< fbuf offset of gz[nvec*width]; dgz follows when gradients
};

/// One atom in an orthogonal box: exact separable factors over cyclic windows.
struct OrthoAtom {
    std::int64_t atom;  ///< index of the atom in the batch arrays
    std::int32_t channel;
    std::int32_t xs, xl, ys, yl;  ///< window starts (in [0, n)) and lengths (<= n)
    /// dbuf offsets, per axis: g[len], then d2[len] (squared distance, in sigmas, from
    /// the atom to the slab; 0 for a window folded over a whole periodic axis), then
    /// dg[len] (dg/dp) when gradients are wanted.
    std::int64_t xoff, yoff;
    double w;           ///< weight
    std::int32_t nseg;  ///< 0, 1 or 2 runs along z (2 when a periodic window wraps)
    ZSeg seg[2];        ///< (gradient plans)
    // Render plans: factors laid out by absolute voxel index, so a tile of the output can
    // take them without any window arithmetic.
    std::int64_t yfoff;         ///< fbuf: gy[ylen] then dy2[ylen]; row j at index j - jfirst
    std::int32_t jfirst, ylen;  ///< first stored row (window start - kPadJ), rows stored
    std::int64_t zfoff;         ///< fbuf: gz[(row_vecs + kPadV) * width], zero outside the window
    std::int32_t kv0, kv1;      ///< row vectors [kv0, kv1) the z window touches
    std::int32_t jlo, jhi;      ///< rows (absolute) of the y window, inclusive; all rows if wrapped
};

/// Padding (zero gy, infinite dy2) around the stored y window: at least the tallest tile
/// plus a vector, so a tile may read whole vectors of coefficients past either end.
inline constexpr int kPadJ = 32;
inline constexpr int kPadV = 4;

/// An atom taking part in one plane of the output (render scratch, one per atom).
struct ActiveAtom {
    const float* gy;   ///< gy of the stored rows (row j at index j - jfirst)
    const float* dy2;  ///< squared y distance in sigmas, same indexing
    const float* gz;   ///< gz by absolute voxel along the row
    float cx;          ///< w * gx[i]
    float lim;         ///< squared reach left for y in this plane
    std::int32_t jfirst, jlo, jhi, kv0, kv1;
};

struct OrthoPlan {
    std::int32_t n[3];
    double reach2;  ///< squared truncation radius in sigmas: rows farther are skipped
    std::int32_t n_channels;
    const OrthoAtom* atoms;          ///< sorted by channel, input order within a channel
    const std::int32_t* chan_begin;  ///< n_channels + 1 offsets into atoms
    /// Render plans: the atoms of each channel (the same chan_begin ranges) ordered by
    /// their y window (jlo, then jhi), so the atoms reaching a block of rows are a short
    /// run of this order; null in gradient plans.
    const std::int32_t* yorder;
    std::int32_t n_atoms;
    const double* dbuf;
    const float* fbuf;
    std::int32_t row_vecs;  ///< vectors per output row: ceil(nz / width)
};

// ------------------------------------------------------------------ triclinic boxes
/// Most Gauss-Legendre nodes per direction (pgrid::kMaxQuadratureNodes).
inline constexpr int kMaxNodes = 128;

/// One atom in a non-orthogonal box. Coordinates are in the frame e1 || c,
/// e2 in the (b, c) plane, e3 completing it, in which c = (c1,0,0), b = (b1,b2,0),
/// a = (a1,a2,a3) with a3, b2, c1 > 0.
struct TricAtom {
    std::int64_t atom;
    std::int32_t channel;
    std::int32_t i0, i1;  ///< unwrapped range of i touched (inclusive)
    double p[3];          ///< position in the frame, relative to the origin
    double sigma, w;
};

struct TricPlan {
    std::int32_t n[3];
    std::int32_t n_channels;
    bool periodic;
    double a1, a2, a3, b1, b2, c1;
    double rho;          ///< truncation radius in units of sigma
    std::int32_t q;      ///< Gauss-Legendre nodes per direction (u and v)
    const double* gl_x;  ///< q nodes in [0, 1]
    const double* gl_w;  ///< q weights, summing to 1
    const TricAtom* atoms;
    const std::int32_t* chan_begin;
    std::int32_t n_atoms;
    std::int32_t max_row;  ///< longest k run of any row (scratch sizing)
};

}  // namespace pgrid::detail
