// Plans for triclinic boxes: each atom in the frame e1 || c, e2 in the (b, c) plane, its
// range of slabs, and the Gauss-Legendre rule for the coarsest voxel (plan.hpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "errors.hpp"
#include "planner.hpp"
#include "quadrature.hpp"

namespace pgrid::detail {

void build_tric(const BatchInput& in, std::int64_t s, const BoxGeom& box, Plan& plan) {
    const std::int64_t a0 = in.offsets[s], a1 = in.offsets[s + 1];
    const Vec3& A = box.axis[0];
    const Vec3& B = box.axis[1];
    const Vec3& C = box.axis[2];
    // Frame: e1 along c, e2 in the (b, c) plane, e3 completing it with a.e3 > 0.
    Vec3 e1 = scaled(C, 1.0 / norm(C));
    Vec3 bp = sub(B, scaled(e1, dot(B, e1)));
    Vec3 e2 = scaled(bp, 1.0 / norm(bp));
    Vec3 e3 = cross(e1, e2);
    if (dot(A, e3) < 0) e3 = scaled(e3, -1.0);
    plan.frame[0] = e1;
    plan.frame[1] = e2;
    plan.frame[2] = e3;
    TricPlan& tp = plan.tp;
    for (int d = 0; d < 3; ++d) tp.n[d] = in.shape[d];
    tp.n_channels = in.n_channels;
    tp.periodic = box.periodic;
    tp.a1 = dot(A, e1);
    tp.a2 = dot(A, e2);
    tp.a3 = dot(A, e3);
    tp.b1 = dot(B, e1);
    tp.b2 = dot(B, e2);
    tp.c1 = norm(C);
    tp.rho = kTricTruncSigmas;
    // Reciprocal lengths: the Gaussian's extent in fractional units along each axis.
    const double vol = tp.a3 * tp.b2 * tp.c1;
    const double recip[3] = {norm(cross(B, C)) / vol, norm(cross(C, A)) / vol,
                             norm(cross(A, B)) / vol};
    Vec3 rows[3];
    if (box.periodic) reciprocal_rows(box, rows);
    double min_sigma = 0.0;
    std::int64_t narrowest = a0;
    int max_row = 1;
    plan.tatoms.clear();
    for (std::int64_t a = a0; a < a1; ++a) {
        TricAtom t{};
        t.atom = a;
        t.channel = in.channels[a];
        t.sigma = in.sigmas[a];
        t.w = in.weights[a];
        // Periodic cells: far images are moved into the cell first, in double, so that
        // slab, row and voxel indices stay within a few cells of it (and within int32).
        const Vec3 off = sub(atom_pos(in, a), box.origin);
        const Vec3 rel = box.periodic ? wrap_into_cell(off, box, rows) : off;
        t.p[0] = dot(rel, e1);
        t.p[1] = dot(rel, e2);
        t.p[2] = dot(rel, e3);
        const double reach = tp.rho * t.sigma;
        if (box.periodic) {
            for (int d = 0; d < 3; ++d)
                if (2.0 * reach * recip[d] > kMaxImageSpan)
                    fail("structure ", s, ", atom ", a - a0, ": sigma = ", t.sigma,
                         " A is too wide for this periodic cell (the Gaussian spans more than ",
                         kMaxImageSpan, " cells)");
        }
        double flo = std::floor(in.shape[0] * (t.p[2] - reach) / tp.a3);
        double fhi = std::floor(in.shape[0] * (t.p[2] + reach) / tp.a3);
        // Clamped in double before the conversion: an atom far outside an open box gives
        // an empty range (its slabs would overflow int32 and loop ~2^31 times).
        if (!box.periodic) {
            flo = std::max(flo, 0.0);
            fhi = std::min(fhi, in.shape[0] - 1.0);
            if (!(fhi >= flo)) flo = 0.0, fhi = -1.0;  // nothing inside the box
        }
        t.i0 = static_cast<std::int32_t>(flo);
        t.i1 = static_cast<std::int32_t>(fhi);
        if (a == a0 || t.sigma < min_sigma) min_sigma = t.sigma, narrowest = a;
        double row =
            (2.0 * reach + std::fabs(tp.a1) / in.shape[0] + std::fabs(tp.b1) / in.shape[1]) *
                in.shape[2] / tp.c1 +
            3.0;
        if (!box.periodic) row = std::min<double>(row, in.shape[2]);  // rows are clipped
        if (!(row <= kMaxAxisVoxels))
            fail("structure ", s, ", atom ", a - a0, ": sigma = ", t.sigma,
                 " A in this periodic triclinic cell needs rows of ", row,
                 " voxels along c, more than ", kMaxAxisVoxels,
                 ": use a narrower sigma, fewer voxels along c or a less skewed cell");
        max_row = std::max(max_row, static_cast<int>(row));
        plan.tatoms.push_back(t);
    }
    tp.max_row = max_row;
    // Quadrature order from the coarsest voxel edge relative to the narrowest Gaussian.
    const double h = std::max(norm(A) / in.shape[0], norm(B) / in.shape[1]);
    if (min_sigma > 0 && !(h / min_sigma <= max_triclinic_h_over_sigma()))
        fail("sigma is too narrow for these triclinic voxels (structure ", s, ", atom ",
             narrowest - a0, ": sigma = ", min_sigma, " A, voxel edge = ", h,
             " A = ", h / min_sigma, " sigma; at most ", max_triclinic_h_over_sigma(),
             " sigma, so sigma must be at least ", h / max_triclinic_h_over_sigma(),
             " A): use a wider sigma or a finer grid");
    tp.q = triclinic_quadrature_order(min_sigma > 0 ? h / min_sigma : 1.0);
    gauss_legendre(tp.q, plan.gl_x, plan.gl_w);
    tp.gl_x = plan.gl_x.data();
    tp.gl_w = plan.gl_w.data();
    sort_by_channel(plan.tatoms, in.n_channels, plan.chan_begin);
    tp.atoms = plan.tatoms.data();
    tp.chan_begin = plan.chan_begin.data();
    tp.n_atoms = static_cast<std::int32_t>(plan.tatoms.size());
}

}  // namespace pgrid::detail
