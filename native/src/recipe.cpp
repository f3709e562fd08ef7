// grid_recipe: a recipe's whole per-call path in one native call — each structure's box
// (the molecule box policy, or its unit cell), its atoms' channels from the element table,
// then grid_batch. The boxes are computed with the same double operations, in the same
// order, as pgrid_cli.core.box.Box.fit / tight / cube / from_lattice, so they are bitwise
// the boxes the Python path builds (tests/test_recipe.py checks it).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "errors.hpp"
#include "pgrid/grid.hpp"

namespace pgrid {

using detail::fail;

namespace {

/// Box of molecule s (atoms [a0, a1)) into origin (3) and axes (3, 3).
void molecule_box(const RecipeInput& in, std::int64_t s, std::int64_t a0, std::int64_t a1,
                  double* origin, double* axes) {
    if (a1 == a0) fail("structure ", s, ": cannot place a box around a structure with no atoms");
    double lo[3], hi[3];
    if (!atom_bounds(in.positions + 3 * a0, a1 - a0, lo, hi))
        for (std::int64_t a = a0; a < a1; ++a)
            for (int d = 0; d < 3; ++d)
                if (!std::isfinite(in.positions[3 * a + d]))
                    fail("structure ", s, ", atom ", a - a0,
                         ": positions contain NaN or infinite coordinates (positions[", a, "])");
    std::fill(axes, axes + 9, 0.0);
    if (in.box_kind == BoxKind::tight) {
        // Box.tight: origin lo - padding, edges (hi - lo) + 2 padding.
        for (int d = 0; d < 3; ++d) {
            const double length = (hi[d] - lo[d]) + 2.0 * in.padding;
            if (!(length > 0))
                fail("structure ", s,
                     ": a tight box with zero padding needs atoms spread along every axis");
            origin[d] = lo[d] - in.padding;
            axes[4 * d] = length;
        }
        return;
    }
    // Box.fit (side: largest extent + 2 padding) and Box.cube: a cube centred on the
    // bounding box, origin (lo + hi) / 2 - side / 2.
    double side = in.cube_side;
    if (in.box_kind == BoxKind::fit) {
        double extent = hi[0] - lo[0];
        for (int d = 1; d < 3; ++d) extent = std::max(extent, hi[d] - lo[d]);
        side = extent + 2.0 * in.padding;
    }
    if (!(side > 0)) fail("structure ", s, ": box axes are degenerate (zero length or coplanar)");
    for (int d = 0; d < 3; ++d) {
        origin[d] = (lo[d] + hi[d]) / 2.0 - side / 2.0;
        axes[4 * d] = side;
    }
    if (in.box_kind == BoxKind::cube && in.outside_limit >= 0) {
        // GridRecipe._check_inside: no atom farther than outside_limit outside the cube.
        for (std::int64_t a = a0; a < a1; ++a) {
            double outside = -INFINITY;
            for (int d = 0; d < 3; ++d) {
                const double p = in.positions[3 * a + d];
                const double hi_d = origin[d] + axes[4 * d];
                outside = std::max(outside, std::max(origin[d] - p, p - hi_d));
            }
            if (outside > in.outside_limit)
                fail("structure ", s, ", atom ", a - a0, ": lies ", outside,
                     " A outside the fixed cube (more than ", in.outside_limit, " A)");
        }
    }
}

}  // namespace

bool atom_bounds(const double* positions, std::int64_t n, double* lo, double* hi) {
    for (int d = 0; d < 3; ++d) lo[d] = hi[d] = positions[d];
    // NaN fails every comparison and infinities end up in lo or hi: finite bounds mean
    // finite coordinates, checked once at the end.
    bool nan = false;
    for (std::int64_t a = 0; a < n; ++a)
        for (int d = 0; d < 3; ++d) {
            const double v = positions[3 * a + d];
            nan = nan || v != v;
            lo[d] = std::min(lo[d], v);
            hi[d] = std::max(hi[d], v);
        }
    for (int d = 0; d < 3; ++d)
        if (!std::isfinite(lo[d]) || !std::isfinite(hi[d])) return false;
    return !nan;
}

void grid_recipe(const RecipeInput& in, float* out, double* origins, double* axes,
                 const Options& opt) {
    const std::int64_t B = in.n_structures;
    if (B < 0 || in.offsets[0] != 0)
        fail("offsets must start at 0, got ", B >= 0 ? in.offsets[0] : -1);
    for (std::int64_t s = 0; s < B; ++s)
        if (in.offsets[s + 1] < in.offsets[s] || in.offsets[s + 1] > in.n_atoms)
            fail("offsets[", s + 1, "] = ", in.offsets[s + 1], " is out of order or beyond the ",
                 in.n_atoms, " atoms");
    if (in.offsets[B] != in.n_atoms)
        fail("offsets[", B, "] = ", in.offsets[B], " must equal the number of atoms, ", in.n_atoms);
    const std::int64_t M = in.n_atoms;
    std::vector<std::int32_t> channels(static_cast<std::size_t>(M));
    std::vector<double> sigmas(static_cast<std::size_t>(M), in.sigma);
    std::vector<double> ones;
    std::vector<std::uint8_t> periodic(static_cast<std::size_t>(B));
    for (std::int64_t s = 0; s < B; ++s) {
        const std::int64_t a0 = in.offsets[s], a1 = in.offsets[s + 1];
        for (std::int64_t a = a0; a < a1; ++a) {
            const std::int64_t z = in.numbers32 ? in.numbers32[a] : in.numbers64[a];
            const std::int32_t c = (z >= 1 && z < in.table_size) ? in.element_channel[z] : -1;
            if (c < 0 || c >= in.n_channels)
                fail("structure ", s, ", atom ", a - a0, ": atomic number ", z,
                     " has no channel in the recipe");
            channels[a] = c;
        }
        const bool crystal = in.lattices && (in.periodic == nullptr || in.periodic[s]);
        periodic[s] = crystal ? 1 : 0;
        double* o = origins + 3 * s;
        double* ax = axes + 9 * s;
        if (crystal) {
            // Box.from_lattice: origin 0, the cell's rows as edges.
            o[0] = o[1] = o[2] = 0.0;
            std::copy(in.lattices + 9 * s, in.lattices + 9 * s + 9, ax);
        } else {
            molecule_box(in, s, a0, a1, o, ax);
        }
    }
    BatchInput batch;
    batch.positions = in.positions;
    batch.offsets = in.offsets;
    batch.channels = channels.data();
    batch.sigmas = sigmas.data();
    if (in.weights) {
        batch.weights = in.weights;
    } else {
        ones.assign(static_cast<std::size_t>(M), 1.0);
        batch.weights = ones.data();
    }
    batch.origins = origins;
    batch.axes = axes;
    batch.periodic = periodic.data();
    batch.n_structures = B;
    batch.n_atoms = M;
    batch.n_channels = in.n_channels;
    for (int d = 0; d < 3; ++d) batch.shape[d] = in.shape[d];
    grid_batch(batch, out, opt);
}

}  // namespace pgrid
