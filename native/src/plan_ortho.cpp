// Plans for orthogonal boxes: the exact separable factors of every atom along the three
// box axes (normal cdf differences at the voxel boundaries of its window), folded onto
// periodic axes, and the layouts the render and gradient kernels read (plan.hpp).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "errors.hpp"
#include "planner.hpp"

namespace pgrid::detail {
namespace {

/// The rows and row vectors an atom reaches, and its stored y rows: the window of y rows
/// [start, start + length) (all rows when it wraps), kPadJ padding rows each side, and the
/// row vectors [kv0, kv1) of the z window (all when it wraps).
void set_row_window(OrthoAtom& rec, const int* start, const int* length, int ny, int nz, int W) {
    const int row_vecs = (nz + W - 1) / W;
    const bool ywrap = start[1] + length[1] > ny;
    rec.jlo = ywrap ? 0 : start[1];
    rec.jhi = ywrap ? ny - 1 : start[1] + length[1] - 1;
    rec.jfirst = rec.jlo - kPadJ;
    rec.ylen = rec.jhi - rec.jlo + 1 + 2 * kPadJ;
    const bool zwrap = start[2] + length[2] > nz;
    rec.kv0 = zwrap ? 0 : start[2] / W;
    rec.kv1 = zwrap ? row_vecs : (start[2] + length[2] - 1) / W + 1;
}

/// Render layout of one atom: gy and dy2 by absolute row (zero / +inf outside the
/// window, kPadJ padding each side), gz by absolute voxel along a row (zero outside,
/// kPadV spare vectors), and the rows and row vectors the atom reaches.
void add_render_rows(OrthoAtom& rec, const int* start, const int* length,
                     const std::vector<double>* fac, const std::vector<double>* dist2,
                     const int* shape, int W, Plan& plan) {
    using detail::kPadJ;
    using detail::kPadV;
    const int ny = shape[1], nz = shape[2];
    const int row_vecs = (nz + W - 1) / W;
    set_row_window(rec, start, length, ny, nz, W);
    rec.yfoff = static_cast<std::int64_t>(plan.fbuf.size());
    plan.fbuf.resize(plan.fbuf.size() + 2 * static_cast<std::size_t>(rec.ylen), 0.0f);
    float* gy = plan.fbuf.data() + rec.yfoff;
    float* dy2 = gy + rec.ylen;
    std::fill(dy2, dy2 + rec.ylen, std::numeric_limits<float>::infinity());
    // start < n and length <= n: an index wraps at most once (no division needed).
    for (int m = 0, j = start[1]; m < length[1]; ++m, ++j) {
        if (j == ny) j = 0;
        gy[j - rec.jfirst] = static_cast<float>(fac[1][m]);
        dy2[j - rec.jfirst] = static_cast<float>(dist2[1][m]);
    }
    rec.zfoff = static_cast<std::int64_t>(plan.fbuf.size());
    plan.fbuf.resize(plan.fbuf.size() + static_cast<std::size_t>(row_vecs + kPadV) * W, 0.0f);
    float* gz = plan.fbuf.data() + rec.zfoff;
    for (int m = 0, k = start[2]; m < length[2]; ++m, ++k) {
        if (k == nz) k = 0;
        gz[k] = static_cast<float>(fac[2][m]);
    }
}

/// Render plans in an open (non-periodic) box, where no window wraps or folds: each
/// atom's factors go straight to where the render reads them (x in dbuf; the padded y
/// rows and the z row in fbuf), with one zero-filled resize of each buffer. Values and
/// layout are those of the general path below (add_render_rows).
void open_render_atoms(const BatchInput& in, std::int64_t a0, std::int64_t na, int W,
                       const PlanBuffers& buf, Plan& plan) {
    const int nz = in.shape[2];
    const int row_vecs = (nz + W - 1) / W;
    const std::size_t zlen = static_cast<std::size_t>(row_vecs + kPadV) * W;
    const std::int32_t* len = buf.len.data();
    const std::int32_t* lo = buf.lo.data();
    std::size_t nd = 0, nf = 0;
    for (std::int64_t a = 0; a < na; ++a) {
        const std::int32_t* L = len + 3 * a;
        if (L[0] == 0 || L[1] == 0 || L[2] == 0) continue;
        nd += 2 * static_cast<std::size_t>(L[0]);
        nf += 2 * static_cast<std::size_t>(L[1] + 2 * kPadJ) + zlen;
    }
    plan.dbuf.assign(nd, 0.0);
    plan.fbuf.assign(nf, 0.0f);
    std::size_t od = 0, of = 0;
    constexpr float inf = std::numeric_limits<float>::infinity();
    for (std::int64_t a = 0; a < na; ++a) {
        OrthoAtom rec{};
        rec.atom = a0 + a;
        rec.channel = in.channels[a0 + a];
        rec.w = in.weights[a0 + a];
        const std::int32_t* L = len + 3 * a;
        if (L[0] == 0 || L[1] == 0 || L[2] == 0) {
            rec.nseg = 0;  // outside the box along some axis: contributes nothing
            plan.oatoms.push_back(rec);
            continue;
        }
        const double* t[3];
        const double* c[3];
        for (int d = 0; d < 3; ++d) {
            t[d] = buf.targs.data() + buf.arg_off[3 * a + d];
            c[d] = buf.cdf.data() + buf.arg_off[3 * a + d];
        }
        // Distance (in sigmas) from the atom to slab m: 0 if the atom is inside.
        auto gap2 = [](const double* tt, int m) {
            const double gap = tt[m] > 0 ? tt[m] : (tt[m + 1] < 0 ? -tt[m + 1] : 0.0);
            return gap * gap;
        };
        // x: factors and squared distances, in double.
        double* gx = plan.dbuf.data() + od;
        for (int m = 0; m < L[0]; ++m) {
            gx[m] = c[0][m + 1] - c[0][m];
            gx[L[0] + m] = gap2(t[0], m);
        }
        rec.xs = lo[3 * a];
        rec.xl = L[0];
        rec.xoff = static_cast<std::int64_t>(od);
        od += 2 * static_cast<std::size_t>(L[0]);
        // y: gy (zero padding) and dy2 (infinite padding), kPadJ rows each side.
        rec.ys = lo[3 * a + 1];
        rec.yl = L[1];
        set_row_window(rec, lo + 3 * a, L, in.shape[1], nz, W);  // no window wraps here
        rec.yfoff = static_cast<std::int64_t>(of);
        float* gy = plan.fbuf.data() + of;
        float* dy2 = gy + rec.ylen;
        for (int m = 0; m < kPadJ; ++m) dy2[m] = dy2[kPadJ + L[1] + m] = inf;
        for (int m = 0; m < L[1]; ++m) {
            gy[kPadJ + m] = static_cast<float>(c[1][m + 1] - c[1][m]);
            dy2[kPadJ + m] = static_cast<float>(gap2(t[1], m));
        }
        of += 2 * static_cast<std::size_t>(rec.ylen);
        // z: the row of factors by absolute voxel, zero outside the window.
        rec.zfoff = static_cast<std::int64_t>(of);
        float* gz = plan.fbuf.data() + of + lo[3 * a + 2];
        for (int m = 0; m < L[2]; ++m) gz[m] = static_cast<float>(c[2][m + 1] - c[2][m]);
        of += zlen;
        rec.nseg = 1;
        plan.oatoms.push_back(rec);
    }
}

/// Plans of any orthogonal box (periodic windows folded or wrapped) and gradient plans:
/// each atom's factors per axis in scratch first, then copied to the plan's layouts.
void general_atoms(const BatchInput& in, std::int64_t a0, std::int64_t na, const BoxGeom& box,
                   int W, bool gradient, PlanBuffers& buf, Plan& plan) {
    auto& fac = buf.fac;
    auto& dfac = buf.dfac;
    auto& dist2 = buf.dist2;
    for (std::int64_t a = 0; a < na; ++a) {
        OrthoAtom rec{};
        rec.atom = a0 + a;
        rec.channel = in.channels[a0 + a];
        rec.w = in.weights[a0 + a];
        const double sigma = in.sigmas[a0 + a];
        bool empty = false;
        int start[3], length[3];
        for (int d = 0; d < 3; ++d) {
            const std::int64_t k = 3 * a + d;
            const int n = in.shape[d], L = buf.len[k];
            if (L == 0) {
                empty = true;
                break;
            }
            const double* t = buf.targs.data() + buf.arg_off[k];
            const double* c = buf.cdf.data() + buf.arg_off[k];
            const double* pd = gradient ? buf.pdf.data() + buf.arg_off[k] : nullptr;
            const int lo = buf.lo[k];
            // A window longer than a periodic axis folds every image onto it.
            const bool folded = box.periodic && L >= n;
            start[d] = folded ? 0 : (box.periodic ? ((lo % n) + n) % n : lo);
            length[d] = folded ? n : L;
            fac[d].assign(length[d], 0.0);
            dist2[d].assign(length[d], 0.0);
            if (gradient) dfac[d].assign(length[d], 0.0);
            for (int m = 0; m < L; ++m) {
                const int idx = folded ? (((lo + m) % n) + n) % n : m;
                fac[d][idx] += c[m + 1] - c[m];
                if (gradient) dfac[d][idx] -= (pd[m + 1] - pd[m]) / sigma;
                // Distance (in sigmas) from the atom to slab m: 0 if the atom is inside.
                const double gap = t[m] > 0 ? t[m] : (t[m + 1] < 0 ? -t[m + 1] : 0.0);
                if (!folded) dist2[d][idx] = gap * gap;
            }
        }
        if (empty) {
            rec.nseg = 0;  // contributes nothing; gradients are zero
            plan.oatoms.push_back(rec);
            continue;
        }
        rec.xs = start[0];
        rec.xl = length[0];
        rec.ys = start[1];
        rec.yl = length[1];
        for (int d = 0; d < 2; ++d) {
            (d == 0 ? rec.xoff : rec.yoff) = static_cast<std::int64_t>(plan.dbuf.size());
            plan.dbuf.insert(plan.dbuf.end(), fac[d].begin(), fac[d].end());
            plan.dbuf.insert(plan.dbuf.end(), dist2[d].begin(), dist2[d].end());
            if (gradient) plan.dbuf.insert(plan.dbuf.end(), dfac[d].begin(), dfac[d].end());
        }
        if (!gradient) {
            rec.nseg = 1;  // render plans only need to know the atom is not empty
            add_render_rows(rec, start, length, fac, dist2, in.shape, W, plan);
            plan.oatoms.push_back(rec);
            continue;
        }
        // z for gradients: one run, or two when the cyclic window wraps past the row end.
        const int nz = in.shape[2];
        const int zs = start[2], zl = length[2];
        const int first = std::min(zl, nz - zs);
        const int runs[2][2] = {{zs, first}, {0, zl - first}};  // {k0, count}
        int src = 0;
        rec.nseg = 0;
        for (const auto& run : runs) {
            if (run[1] <= 0) continue;
            ZSeg& sg = rec.seg[rec.nseg++];
            sg.k0 = run[0];
            sg.len = run[1];
            sg.nvec = (run[1] + W - 1) / W;
            sg.off = static_cast<std::int64_t>(plan.fbuf.size());
            const std::size_t padded = static_cast<std::size_t>(sg.nvec) * W;
            plan.fbuf.resize(plan.fbuf.size() + padded * (gradient ? 2 : 1), 0.0f);
            for (int m = 0; m < run[1]; ++m) {
                plan.fbuf[sg.off + m] = static_cast<float>(fac[2][src + m]);
                if (gradient) plan.fbuf[sg.off + padded + m] = static_cast<float>(dfac[2][src + m]);
            }
            src += run[1];
        }
        plan.oatoms.push_back(rec);
    }
}

}  // namespace

void build_ortho(const BatchInput& in, std::int64_t s, const BoxGeom& box, const IsaKernels& K,
                 bool gradient, PlanBuffers& buf, Plan& plan) {
    const std::int64_t a0 = in.offsets[s], a1 = in.offsets[s + 1];
    const std::int64_t na = a1 - a0;
    const int W = K.float_width;
    double h[3];
    for (int d = 0; d < 3; ++d) {
        const double len = norm(box.axis[d]);
        plan.frame[d] = scaled(box.axis[d], 1.0 / len);
        h[d] = len / in.shape[d];
    }
    // 1. Windows and the boundary arguments (b - p)/sigma of every atom and axis.
    buf.targs.clear();
    buf.targs.reserve(static_cast<std::size_t>(na) * 3 * 32);
    buf.arg_off.assign(3 * na, 0);
    buf.lo.assign(3 * na, 0);
    buf.len.assign(3 * na, 0);
    Vec3 recip[3];
    if (box.periodic) reciprocal_rows(box, recip);
    for (std::int64_t a = 0; a < na; ++a) {
        // Periodic cells: far images are moved into the cell first, in double, so that
        // every window below stays within a few cells of it (and within int32).
        const Vec3 off = sub(atom_pos(in, a0 + a), box.origin);
        const Vec3 rel = box.periodic ? wrap_into_cell(off, box, recip) : off;
        const double sigma = in.sigmas[a0 + a];
        for (int d = 0; d < 3; ++d) {
            const int n = in.shape[d];
            const double p = dot(rel, plan.frame[d]);
            const double reach = kTruncSigmas * sigma;
            double flo = std::floor((p - reach) / h[d]), fhi = std::floor((p + reach) / h[d]);
            // The voxel below p stays in the window when p is on a voxel face, even if the
            // reach is below the resolution of p (p - reach == p): a point mass on a face
            // is split between the two voxels. (Nothing changes unless p/h is a whole
            // number and (p - reach)/h rounds to it.)
            flo = std::min(flo, std::ceil(p / h[d]) - 1);
            if (!box.periodic) {
                flo = std::max(flo, 0.0);
                fhi = std::min(fhi, n - 1.0);
            } else if (fhi - flo + 1 > static_cast<double>(kMaxImageSpan) * n) {
                fail("structure ", s, ", atom ", a, ": sigma = ", sigma,
                     " A is too wide for this periodic cell (the Gaussian spans more than ",
                     kMaxImageSpan, " cells)");
            }
            const std::int64_t k = 3 * a + d;
            buf.arg_off[k] = static_cast<std::int64_t>(buf.targs.size());
            if (fhi < flo) continue;  // outside an open box along this axis
            buf.lo[k] = static_cast<std::int32_t>(flo);
            buf.len[k] = static_cast<std::int32_t>(fhi - flo + 1);
            // Boundary arguments (b - p)/sigma, stepping by h/sigma.
            const std::size_t at = buf.targs.size();
            buf.targs.resize(at + buf.len[k] + 1);
            const double inv_s = 1.0 / sigma, t0 = (flo * h[d] - p) * inv_s, dt = h[d] * inv_s;
            double* t = buf.targs.data() + at;
            for (int m = 0; m <= buf.len[k]; ++m) t[m] = t0 + m * dt;
        }
    }
    // 2. Normal cdf (and pdf) at every boundary, vectorised over the whole structure.
    buf.cdf.resize(buf.targs.size());
    buf.pdf.resize(gradient ? buf.targs.size() : 0);
    K.normal_cdf(buf.targs.data(), buf.targs.size(), buf.cdf.data(),
                 gradient ? buf.pdf.data() : nullptr);
    // 3. Factors g = cdf differences (and dg/dp), folded onto the periodic axis.
    plan.oatoms.clear();
    plan.oatoms.reserve(na);
    plan.dbuf.clear();
    plan.fbuf.clear();
    if (!gradient && !box.periodic)
        open_render_atoms(in, a0, na, W, buf, plan);
    else
        general_atoms(in, a0, na, box, W, gradient, buf, plan);
    sort_by_channel(plan.oatoms, in.n_channels, plan.chan_begin);
    OrthoPlan& op = plan.op;
    op.yorder = nullptr;
    if (!gradient) {
        // Each channel's atoms by y window: the render sweeps rows with two pointers into
        // this order instead of testing every atom of a plane against every block of rows.
        const auto& at = plan.oatoms;
        plan.yorder.resize(at.size());
        for (std::size_t k = 0; k < at.size(); ++k) plan.yorder[k] = static_cast<std::int32_t>(k);
        for (int c = 0; c < in.n_channels; ++c)
            std::sort(plan.yorder.begin() + plan.chan_begin[c],
                      plan.yorder.begin() + plan.chan_begin[c + 1],
                      [&at](std::int32_t x, std::int32_t y) {
                          if (at[x].jlo != at[y].jlo) return at[x].jlo < at[y].jlo;
                          if (at[x].jhi != at[y].jhi) return at[x].jhi < at[y].jhi;
                          return x < y;
                      });
        op.yorder = plan.yorder.data();
    }
    for (int d = 0; d < 3; ++d) op.n[d] = in.shape[d];
    op.reach2 = kTruncSigmas * kTruncSigmas;
    op.n_channels = in.n_channels;
    op.atoms = plan.oatoms.data();
    op.chan_begin = plan.chan_begin.data();
    op.n_atoms = static_cast<std::int32_t>(plan.oatoms.size());
    op.dbuf = plan.dbuf.data();
    op.fbuf = plan.fbuf.data();
    op.row_vecs = (in.shape[2] + W - 1) / W;
}

}  // namespace pgrid::detail
