// Validation of a batch before any of it is used: offsets first (so that no atom is read
// out of bounds), then every box and atom, with messages naming the structure and atom.
#include <cmath>
#include <cstdint>

#include "errors.hpp"
#include "geometry.hpp"
#include "pgrid/grid.hpp"

namespace pgrid {

using detail::fail;

void validate(const BatchInput& in) {
    if (in.n_structures < 0) fail("negative number of structures");
    if (in.n_channels < 1) fail("n_channels must be at least 1, got ", in.n_channels);
    for (int d = 0; d < 3; ++d)
        if (in.shape[d] < 1) fail("grid shape must be positive, got ", in.shape[d]);
    if (in.n_structures == 0) return;
    if (in.offsets[0] != 0) fail("atom offsets must start at 0, got ", in.offsets[0]);
    if (in.offsets[in.n_structures] != in.n_atoms)
        fail("atom offsets must end at the number of atoms (", in.n_atoms, "), got ",
             in.offsets[in.n_structures]);
    // Every offset first: non-decreasing from 0 to M bounds them all before any atom is read.
    for (std::int64_t s = 0; s < in.n_structures; ++s)
        if (in.offsets[s + 1] < in.offsets[s])
            fail("atom offsets must be non-decreasing (structure ", s, ")");
    for (std::int64_t s = 0; s < in.n_structures; ++s) {
        const std::int64_t a0 = in.offsets[s], a1 = in.offsets[s + 1];
        const detail::BoxGeom box = detail::box_of(in, s);
        for (int d = 0; d < 3; ++d) {
            if (!std::isfinite(box.origin[d])) fail("structure ", s, ": box origin is not finite");
            for (int e = 0; e < 3; ++e)
                if (!std::isfinite(box.axis[d][e]))
                    fail("structure ", s, ": box axes are not finite");
        }
        const double la = detail::norm(box.axis[0]), lb = detail::norm(box.axis[1]),
                     lc = detail::norm(box.axis[2]);
        const double vol =
            std::fabs(detail::dot(box.axis[0], detail::cross(box.axis[1], box.axis[2])));
        if (!(la > 0 && lb > 0 && lc > 0) || !(vol > 1e-12 * la * lb * lc))
            fail("structure ", s, ": box axes are degenerate (zero length or coplanar)");
        detail::Vec3 recip[3];
        if (box.periodic) detail::reciprocal_rows(box, recip);
        for (std::int64_t a = a0; a < a1; ++a) {
            const detail::Vec3 p = detail::atom_pos(in, a);
            if (!(std::isfinite(p[0]) && std::isfinite(p[1]) && std::isfinite(p[2])))
                fail("structure ", s, ", atom ", a - a0, ": position (", p[0], ", ", p[1], ", ",
                     p[2], ") is not finite");
            // Far atoms: projections must stay finite, and a periodic atom's place in its
            // cell must be representable (the plans wrap it there before any int is formed).
            const detail::Vec3 rel = detail::sub(p, box.origin);
            for (int d = 0; d < 3; ++d)
                if (!(std::fabs(rel[d]) <= kMaxDistance))
                    fail("structure ", s, ", atom ", a - a0, ": position (", p[0], ", ", p[1], ", ",
                         p[2], ") is more than ", kMaxDistance,
                         " A from the box origin (positions[", a, "])");
            if (box.periodic)
                for (int d = 0; d < 3; ++d) {
                    const double f = detail::dot(rel, recip[d]);
                    if (!(std::fabs(f) < detail::kMaxCells))
                        fail("structure ", s, ", atom ", a - a0, ": position (", p[0], ", ", p[1],
                             ", ", p[2], ") is ", f, " cells from the periodic box along axis ", d,
                             ": beyond 2^52 cells its place in the cell is not representable "
                             "(positions[",
                             a, "])");
                }
            const double sg = in.sigmas[a];
            if (!(std::isfinite(sg) && sg > 0))
                fail("structure ", s, ", atom ", a - a0, ": sigma must be a positive length, got ",
                     sg);
            if (sg < kMinSigma)
                fail("structure ", s, ", atom ", a - a0, ": sigma = ", sg,
                     " A is below the smallest supported width, ", kMinSigma, " A (sigmas[", a,
                     "])");
            if (sg > kMaxSigma)
                fail("structure ", s, ", atom ", a - a0, ": sigma = ", sg,
                     " A is above the widest supported width, ", kMaxSigma, " A (sigmas[", a, "])");
            if (!std::isfinite(in.weights[a]))
                fail("structure ", s, ", atom ", a - a0, ": weight is not finite");
            const int c = in.channels[a];
            if (c < 0 || c >= in.n_channels)
                fail("structure ", s, ", atom ", a - a0, ": channel ", c, " is out of range [0, ",
                     in.n_channels, ")");
        }
    }
}

}  // namespace pgrid
