// Small 3-vector helpers and one structure's box, as the validation and the plan builders
// read them from a BatchInput.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "pgrid/grid.hpp"

namespace pgrid::detail {

using Vec3 = std::array<double, 3>;

inline double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
inline double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }
inline Vec3 cross(const Vec3& a, const Vec3& b) {
    return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
inline Vec3 scaled(const Vec3& a, double s) { return {a[0] * s, a[1] * s, a[2] * s}; }
inline Vec3 sub(const Vec3& a, const Vec3& b) { return {a[0] - b[0], a[1] - b[1], a[2] - b[2]}; }

struct BoxGeom {
    Vec3 origin;
    Vec3 axis[3];  // whole-box edge vectors
    bool periodic;
};

inline BoxGeom box_of(const BatchInput& in, std::int64_t s) {
    BoxGeom b;
    for (int d = 0; d < 3; ++d) {
        b.origin[d] = in.origins[3 * s + d];
        for (int e = 0; e < 3; ++e) b.axis[d][e] = in.axes[9 * s + 3 * d + e];
    }
    b.periodic = in.periodic[s] != 0;
    return b;
}

/// Mutually perpendicular edges (to 1e-9 relative): the exact separable path applies.
inline bool is_orthogonal(const BoxGeom& b) {
    const double la = norm(b.axis[0]), lb = norm(b.axis[1]), lc = norm(b.axis[2]);
    return std::fabs(dot(b.axis[0], b.axis[1])) <= 1e-9 * la * lb &&
           std::fabs(dot(b.axis[0], b.axis[2])) <= 1e-9 * la * lc &&
           std::fabs(dot(b.axis[1], b.axis[2])) <= 1e-9 * lb * lc;
}

inline Vec3 atom_pos(const BatchInput& in, std::int64_t a) {
    return {in.positions[3 * a], in.positions[3 * a + 1], in.positions[3 * a + 2]};
}

/// Rows r[d] of the inverse of the axes: dot(x, r[d]) is the fractional coordinate of the
/// offset x along axis d (the box must not be degenerate).
inline void reciprocal_rows(const BoxGeom& b, Vec3 r[3]) {
    const Vec3 bc = cross(b.axis[1], b.axis[2]);
    const double inv_vol = 1.0 / dot(b.axis[0], bc);
    r[0] = scaled(bc, inv_vol);
    r[1] = scaled(cross(b.axis[2], b.axis[0]), inv_vol);
    r[2] = scaled(cross(b.axis[0], b.axis[1]), inv_vol);
}

/// Fractional coordinates farther than this from a periodic cell are moved into it.
/// Offsets within [-1, 2) cells are used as given (the kernel sums their images).
inline constexpr double kWrapBelow = -1.0, kWrapFrom = 2.0;

/// Largest |fractional coordinate| of an atom in a periodic cell: beyond 2^52 the spacing
/// of doubles is a whole cell, so the atom's place in the cell is not representable.
inline constexpr double kMaxCells = 0x1p52;

/// The offset `rel` (atom - origin) of an atom in a periodic cell, moved by whole cells
/// along each axis on which its fractional coordinate lies outside [-1, 2), in double and
/// before any integer is formed: rel - floor(f_d) * axis_d. Exact when the shift is (an
/// atom at x + k*a with k*a and x + k*a exact gives back x), so far images give the same
/// grid; otherwise within the rounding of rel.
inline Vec3 wrap_into_cell(Vec3 rel, const BoxGeom& b, const Vec3 r[3]) {
    const double f[3] = {dot(rel, r[0]), dot(rel, r[1]), dot(rel, r[2])};
    for (int d = 0; d < 3; ++d) {
        if (f[d] >= kWrapBelow && f[d] < kWrapFrom) continue;
        const double k = std::floor(f[d]);
        for (int e = 0; e < 3; ++e) rel[e] -= k * b.axis[d][e];
    }
    return rel;
}

}  // namespace pgrid::detail
