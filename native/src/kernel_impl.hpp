// The numeric kernels, written once against VF / VD (simd_*.hpp) and compiled per ISA.
// Included inside `namespace pgrid::<isa>` within a target region; the including TU has
// already included <immintrin.h>, <cmath>, <cstring>, <cstdint>, plan.hpp, kernels.hpp
// and erfc_coeffs.hpp.

using detail::OrthoAtom;
using detail::OrthoPlan;
using detail::TricAtom;
using detail::TricPlan;
using detail::ZSeg;

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// ------------------------------------------------------------------ special functions
/// exp(x) to ~1 ulp for x in [-708, 709]; 0 below (where exp underflows), clamped above.
PGRID_INLINE VD vexp(VD x0) {
    VD x = vmax(x0, VD::set1(-708.0));
    x = vmin(x, VD::set1(709.0));
    const VD n = vround(x * VD::set1(1.4426950408889634));
    // Cody-Waite: ln2 split so that n*ln2_hi is exact.
    VD r = fnmadd(n, VD::set1(6.93147180369123816490e-01), x);
    r = fnmadd(n, VD::set1(1.90821492927058770002e-10), r);
    // Taylor series to r^12: truncation error < 2e-16 for |r| <= ln2/2.
    VD p = VD::set1(1.0 / 479001600.0);
    p = fmadd(p, r, VD::set1(1.0 / 39916800.0));
    p = fmadd(p, r, VD::set1(1.0 / 3628800.0));
    p = fmadd(p, r, VD::set1(1.0 / 362880.0));
    p = fmadd(p, r, VD::set1(1.0 / 40320.0));
    p = fmadd(p, r, VD::set1(1.0 / 5040.0));
    p = fmadd(p, r, VD::set1(1.0 / 720.0));
    p = fmadd(p, r, VD::set1(1.0 / 120.0));
    p = fmadd(p, r, VD::set1(1.0 / 24.0));
    p = fmadd(p, r, VD::set1(1.0 / 6.0));
    p = fmadd(p, r, VD::set1(0.5));
    p = fmadd(p, r, VD::set1(1.0));
    p = fmadd(p, r, VD::set1(1.0));
    return select_gt(VD::set1(-708.0), x0, VD::set1(0.0), vldexp(p, n));
}

/// Standard normal cdf and pdf at t (absolute error of the cdf ~1e-16).
PGRID_INLINE void vnormal(VD t, VD& cdf, VD& pdf) {
    namespace ef = ::pgrid::erfc_fit;
    const VD z = vabs(t) * VD::set1(kInvSqrt2);
    const VD zc = vmin(z, VD::set1(ef::ZMAX));
    const VD q = VD::set1(1.0) / (zc + VD::set1(ef::K));
    const VD u = fmadd(VD::set1(ef::A), (zc - VD::set1(ef::K)) * q, VD::set1(ef::B));
    VD poly = VD::set1(ef::C[ef::TERMS - 1]);
    for (int n = ef::TERMS - 2; n >= 0; --n) poly = fmadd(poly, u, VD::set1(ef::C[n]));
    const VD e = vexp(VD::set1(0.0) - z * z);  // exp(-t^2/2)
    VD half_erfc = e * poly * (q * VD::set1(0.5 * ef::K));
    half_erfc = select_gt(z, VD::set1(ef::ZMAX), VD::set1(0.0), half_erfc);
    cdf = select_gt(t, VD::set1(0.0), VD::set1(1.0) - half_erfc, half_erfc);
    pdf = e * VD::set1(kInvSqrt2Pi);
}

void normal_cdf(const double* t, std::size_t n, double* cdf, double* pdf) {
    constexpr int W = VD::W;
    std::size_t m = 0;
    VD c, p;
    for (; m + W <= n; m += W) {
        vnormal(VD::load(t + m), c, p);
        c.store(cdf + m);
        if (pdf) p.store(pdf + m);
    }
    if (m < n) {
        double tb[W] = {}, cb[W], pb[W];
        for (std::size_t r = m; r < n; ++r) tb[r - m] = t[r];
        vnormal(VD::load(tb), c, p);
        c.store(cb);
        p.store(pb);
        for (std::size_t r = m; r < n; ++r) {
            cdf[r] = cb[r - m];
            if (pdf) pdf[r] = pb[r - m];
        }
    }
}

/// exp(x) in float (relative error ~2e-7) for x in [-87, 88]; 0 below.
PGRID_INLINE VF vexpf(VF x0) {
    VF x = vmax(x0, VF::set1(-87.0f));
    x = vmin(x, VF::set1(88.0f));
    const VF n = vround(x * VF::set1(1.44269504f));
    VF r = fnmadd(n, VF::set1(0.693359375f), x);  // ln2 split: n*hi exact
    r = fnmadd(n, VF::set1(-2.12194440e-4f), r);
    VF p = VF::set1(1.0f / 5040.0f);
    p = fmadd(p, r, VF::set1(1.0f / 720.0f));
    p = fmadd(p, r, VF::set1(1.0f / 120.0f));
    p = fmadd(p, r, VF::set1(1.0f / 24.0f));
    p = fmadd(p, r, VF::set1(1.0f / 6.0f));
    p = fmadd(p, r, VF::set1(0.5f));
    p = fmadd(p, r, VF::set1(1.0f));
    p = fmadd(p, r, VF::set1(1.0f));
    return select_gt(VF::set1(-87.0f), x0, VF::zero(), vldexp(p, n));
}

/// Standard normal cdf in float (absolute error < 4e-7), and the pdf when asked: the
/// triclinic quadrature path, whose tolerance is 1e-4 of the grid maximum.
template <bool kPdf = false>
PGRID_INLINE VF vcdff(VF t, VF* pdf = nullptr) {
    namespace ef = ::pgrid::erfc_fit_f;
    const VF z = vabs(t) * VF::set1(0.70710678f);
    const VF zc = vmin(z, VF::set1(ef::ZMAX));
    const VF q = vrcp(zc + VF::set1(ef::K));
    const VF u = fmadd(VF::set1(ef::A), (zc - VF::set1(ef::K)) * q, VF::set1(ef::B));
    VF poly = VF::set1(ef::C[ef::TERMS - 1]);
    for (int n = ef::TERMS - 2; n >= 0; --n) poly = fmadd(poly, u, VF::set1(ef::C[n]));
    const VF e = vexpf(VF::zero() - z * z);  // exp(-t^2/2)
    if constexpr (kPdf) *pdf = e * VF::set1(0.39894228f);
    VF half_erfc = e * poly * (q * VF::set1(0.5f * ef::K));
    half_erfc = select_gt(z, VF::set1(ef::ZMAX), VF::zero(), half_erfc);
    return select_gt(t, VF::zero(), VF::set1(1.0f) - half_erfc, half_erfc);
}

// ------------------------------------------------------------------ output helpers
/// Copy n floats to dst; with stream, whole aligned vectors use non-temporal stores so
/// the output is written once without being read (the memset floor's behaviour).
PGRID_INLINE void copy_out(float* dst, const float* src, std::size_t n, bool stream) {
    if (!stream || VF::W == 1) {
        std::memcpy(dst, src, n * sizeof(float));
        return;
    }
    std::size_t i = 0;
    const auto mis = reinterpret_cast<std::uintptr_t>(dst) % kStreamAlign;
    std::size_t head = mis ? (kStreamAlign - mis) / sizeof(float) : 0;
    if (head > n) head = n;
    for (; i < head; ++i) dst[i] = src[i];
    for (; i + VF::W <= n; i += VF::W) VF::load(src + i).stream(dst + i);
    for (; i < n; ++i) dst[i] = src[i];
}

/// n zeros to dst with non-temporal stores for whole aligned vectors (no fence: the
/// caller fences once after its last streamed store).
PGRID_INLINE void copy_zero_stream(float* dst, std::size_t n) {
    if (VF::W == 1) {
        std::memset(dst, 0, n * sizeof(float));
        return;
    }
    std::size_t i = 0;
    const auto mis = reinterpret_cast<std::uintptr_t>(dst) % kStreamAlign;
    std::size_t head = mis ? (kStreamAlign - mis) / sizeof(float) : 0;
    if (head > n) head = n;
    for (; i < head; ++i) dst[i] = 0.0f;
    const VF z = VF::zero();
    for (; i + VF::W <= n; i += VF::W) z.stream(dst + i);
    for (; i < n; ++i) dst[i] = 0.0f;
}

void zero(float* dst, std::size_t n, bool stream) {
    if (!stream || VF::W == 1) {
        std::memset(dst, 0, n * sizeof(float));
        return;
    }
    copy_zero_stream(dst, n);
    store_fence();
}

/// One tile of a plane: rows [j0, j0 + RB) x row vectors [t0, t0 + NT), accumulated in
/// registers over the atoms that reach it, then stored once (masked past the row end).
template <int RB, int NT>
PGRID_INLINE void ortho_tile(float* dst, int ny, int nz, int row_vecs, int j0, int t0,
                             const detail::ActiveAtom* act, int n_act) {
    constexpr int W = VF::W;
    VF acc[RB][NT];
    for (int r = 0; r < RB; ++r)
        for (int v = 0; v < NT; ++v) acc[r][v] = VF::zero();
    for (int k = 0; k < n_act; ++k) {
        const detail::ActiveAtom& a = act[k];
        if (a.jhi < j0 || a.jlo >= j0 + RB || a.kv1 <= t0 || a.kv0 >= t0 + NT) continue;
        // Coefficients of the RB rows, whole vectors at a time; rows outside the
        // truncation cylinder get 0 (the stored rows are padded to allow this).
        constexpr int kC = RB > W ? RB : W;
        alignas(64) float c[kC];
        const float* gy = a.gy + (j0 - a.jfirst);
        const float* dy2 = a.dy2 + (j0 - a.jfirst);
        const VF cx = VF::set1(a.cx), lim = VF::set1(a.lim);
        for (int r = 0; r < RB; r += W)
            select_le(VF::load(dy2 + r), lim, cx * VF::load(gy + r)).store(c + r);
        const float* gz = a.gz + t0 * W;
        for (int v = 0; v < NT; ++v) {
            const VF g = VF::load(gz + v * W);
            for (int r = 0; r < RB; ++r) acc[r][v] = fmadd(VF::set1(c[r]), g, acc[r][v]);
        }
    }
    const int tail = nz - (row_vecs - 1) * W;  // lanes of the row's last vector
    for (int r = 0; r < RB && j0 + r < ny; ++r) {
        float* row = dst + static_cast<std::size_t>(j0 + r) * nz;
        for (int v = 0; v < NT && t0 + v < row_vecs; ++v) {
            if (t0 + v == row_vecs - 1 && tail < W)
                acc[r][v].store_n(row + (t0 + v) * W, tail);
            else
                acc[r][v].store(row + (t0 + v) * W);
        }
    }
}

/// Every tile of a plane. The active atoms come ordered by y window (jlo, then jhi), so
/// the atoms that can reach a block of rows are a run [lo, hi) of them, found by two
/// pointers that only move forward (each tile still tests the atoms of its run).
/// Testing every atom of the plane at every tile cost more than the arithmetic.
template <int RB, int NT>
PGRID_INLINE void ortho_plane_tiles(float* dst, int ny, int nz, int row_vecs,
                                    const detail::ActiveAtom* act, int n_act) {
    for (int t0 = 0; t0 < row_vecs; t0 += NT) {
        int lo = 0, hi = 0;
        for (int j0 = 0; j0 < ny; j0 += RB) {
            while (hi < n_act && act[hi].jlo < j0 + RB) ++hi;
            while (lo < hi && act[lo].jhi < j0) ++lo;
            ortho_tile<RB, NT>(dst, ny, nz, row_vecs, j0, t0, act + lo, hi - lo);
        }
    }
}

// ------------------------------------------------------------------ orthogonal boxes
void render_ortho(const OrthoPlan& P, int c, int i_begin, int i_end, float* out_c, float* plane,
                  detail::ActiveAtom* active, bool stream) {
    // Accumulators per tile: all 32 vector registers of AVX-512 leave room for 16; AVX2
    // and scalar code have 16 registers, so 8.
    constexpr int kAcc = VF::W == 16 ? 16 : 8;
    const int nx = P.n[0], ny = P.n[1], nz = P.n[2];
    const std::size_t plane_n = static_cast<std::size_t>(ny) * nz;
    const std::int32_t* o_begin = P.yorder + P.chan_begin[c];
    const std::int32_t* o_end = P.yorder + P.chan_begin[c + 1];
    for (int i = i_begin; i < i_end; ++i) {
        // The atoms reaching plane i, with their x factor and remaining reach, in y order.
        int n_act = 0;
        for (const std::int32_t* o = o_begin; o != o_end; ++o) {
            const OrthoAtom* a = P.atoms + *o;
            if (a->nseg == 0) continue;
            int di = i - a->xs;
            if (di < 0) di += nx;
            if (di >= a->xl) continue;
            const double* gx = P.dbuf + a->xoff;
            const double lim = P.reach2 - gx[a->xl + di];
            if (lim < 0) continue;
            detail::ActiveAtom& t = active[n_act++];
            t.gy = P.fbuf + a->yfoff;
            t.dy2 = t.gy + a->ylen;
            t.jfirst = a->jfirst;
            t.gz = P.fbuf + a->zfoff;
            t.cx = static_cast<float>(a->w * gx[di]);
            t.lim = static_cast<float>(lim);
            t.jlo = a->jlo;
            t.jhi = a->jhi;
            t.kv0 = a->kv0;
            t.kv1 = a->kv1;
        }
        float* dst_plane = out_c + static_cast<std::size_t>(i) * plane_n;
        if (n_act == 0) {
            // No atom reaches the plane (an empty channel, or past the atoms): memset
            // speed rather than the tiles' loop storing zeros.
            if (stream)
                copy_zero_stream(dst_plane, plane_n);
            else
                std::memset(dst_plane, 0, plane_n * sizeof(float));
            continue;
        }
        float* dst = stream ? plane : dst_plane;
        const int rv = P.row_vecs;
        if (rv == 1)
            ortho_plane_tiles<kAcc, 1>(dst, ny, nz, rv, active, n_act);
        else if (rv == 2)
            ortho_plane_tiles<kAcc / 2, 2>(dst, ny, nz, rv, active, n_act);
        else
            ortho_plane_tiles<kAcc / 4, 4>(dst, ny, nz, rv, active, n_act);
        if (stream) copy_out(dst_plane, plane, plane_n, true);
    }
    if (stream) store_fence();
}

void grad_ortho(const OrthoPlan& P, int a_begin, int a_end, const float* dgrid, double* dlocal) {
    constexpr int W = VF::W;
    const int nx = P.n[0], ny = P.n[1], nz = P.n[2];
    const std::size_t plane_n = static_cast<std::size_t>(ny) * nz;
    const std::size_t chan_n = plane_n * nx;
    for (int ai = a_begin; ai < a_end; ++ai) {
        const OrthoAtom& a = P.atoms[ai];
        double gpx = 0, gpy = 0, gpz = 0, gw = 0;
        if (a.nseg > 0) {
            const float* G = dgrid + a.channel * chan_n;
            const double* gx = P.dbuf + a.xoff;
            const double* dx2 = gx + a.xl;
            const double* dgx = gx + 2 * a.xl;
            const double* gy = P.dbuf + a.yoff;
            const double* dy2 = gy + a.yl;
            const double* dgy = gy + 2 * a.yl;
            int i = a.xs;
            for (int di = 0; di < a.xl; ++di, ++i) {
                if (i == nx) i = 0;
                // The same rows as the forward pass, so this is its exact derivative.
                const double lim = P.reach2 - dx2[di];
                if (lim < 0) continue;
                double sx_t = 0, sx_dt = 0, s_u = 0;
                int j = a.ys;
                for (int dj = 0; dj < a.yl; ++dj, ++j) {
                    if (j == ny) j = 0;
                    if (dy2[dj] > lim) continue;
                    const float* row = G + i * plane_n + static_cast<std::size_t>(j) * nz;
                    // T = sum_k dgrid*gz, U = sum_k dgrid*dgz over the atom's z runs.
                    VF t = VF::zero(), u = VF::zero();
                    for (int s = 0; s < a.nseg; ++s) {
                        const ZSeg& sg = a.seg[s];
                        const float* gz = P.fbuf + sg.off;
                        const float* dgz = gz + static_cast<std::size_t>(sg.nvec) * W;
                        const float* g = row + sg.k0;
                        const int nfull = sg.len / W, tail = sg.len - nfull * W;
                        int v = 0;
                        for (; v < nfull; ++v) {
                            const VF gv = VF::load(g + v * W);
                            t = fmadd(gv, VF::load(gz + v * W), t);
                            u = fmadd(gv, VF::load(dgz + v * W), u);
                        }
                        if (tail) {  // never read past the row
                            const VF gv = VF::load_n(g + v * W, tail);
                            t = fmadd(gv, VF::load(gz + v * W), t);
                            u = fmadd(gv, VF::load(dgz + v * W), u);
                        }
                    }
                    const double T = t.sum(), U = u.sum();
                    sx_t += gy[dj] * T;
                    sx_dt += dgy[dj] * T;
                    s_u += gy[dj] * U;
                }
                gpx += dgx[di] * sx_t;
                gpy += gx[di] * sx_dt;
                gpz += gx[di] * s_u;
                gw += gx[di] * sx_t;
            }
        }
        dlocal[4 * ai + 0] = a.w * gpx;
        dlocal[4 * ai + 1] = a.w * gpy;
        dlocal[4 * ai + 2] = a.w * gpz;
        dlocal[4 * ai + 3] = gw;
    }
}

/// Move a finished plane to the output and leave rows [jlo, jhi] of the scratch zeroed.
PGRID_INLINE void flush_plane(float* dst, float* plane, int jlo, int jhi, int nz,
                              std::size_t plane_n, bool stream) {
    if (jhi < jlo) {
        zero(dst, plane_n, stream);
        return;
    }
    copy_out(dst, plane, plane_n, stream);
    std::memset(plane + static_cast<std::size_t>(jlo) * nz, 0,
                static_cast<std::size_t>(jhi - jlo + 1) * nz * sizeof(float));
}

// ------------------------------------------------------------------ triclinic boxes
/// Geometry of atom a in the unwrapped slab i: calls row(j, klo, len) for every row of
/// voxels (i, j, klo .. klo+len-1) that comes within the truncation radius of the atom
/// (images are the unwrapped indices; open boxes clip to the grid). Slab-level values
/// the caller needs are returned through the TricSlab.
struct TricSlab {
    double u0, u1, inv_s;
};
/// floor(x) as an int in [lo, hi], clamped in double before the conversion (a far atom or
/// a huge reach must not overflow it; NaN gives lo).
PGRID_INLINE int floor_in(double x, int lo, int hi) {
    const double f = std::floor(x);
    if (!(f > lo)) return lo;
    return f < hi ? static_cast<int>(f) : hi;
}
/// Unwrapped indices of periodic cells stay within a few cells of [0, n): a wide bound.
constexpr int kFarIndex = 1 << 30;
template <class RowFn>
PGRID_INLINE bool tric_rows(const TricPlan& P, const TricAtom& a, int i, TricSlab& slab,
                            RowFn&& row) {
    const int nx = P.n[0], ny = P.n[1], nz = P.n[2];
    const double rho = P.rho * a.sigma;
    const double p1 = a.p[0], p2 = a.p[1], p3 = a.p[2];
    slab.inv_s = 1.0 / a.sigma;
    slab.u0 = static_cast<double>(i) / nx;
    slab.u1 = static_cast<double>(i + 1) / nx;
    const double u0 = slab.u0, u1 = slab.u1;
    // Distance of the slab from the atom along e3 (x3 = u*a3 - p3, a3 > 0).
    const double x3lo = u0 * P.a3 - p3, x3hi = u1 * P.a3 - p3;
    const double d3 = x3lo > 0 ? x3lo : (x3hi < 0 ? -x3hi : 0.0);
    if (d3 > rho) return false;
    const double rho2 = std::sqrt(rho * rho - d3 * d3);
    const double ua2lo = std::fmin(u0 * P.a2, u1 * P.a2), ua2hi = std::fmax(u0 * P.a2, u1 * P.a2);
    // Open boxes clip to the grid ([0, n] and [-1, n - 1] keep an empty range empty).
    const int far = P.periodic ? kFarIndex : 0;
    const int jlo = floor_in(ny * (p2 - rho2 - ua2hi) / P.b2, -far, P.periodic ? far : ny);
    const int jhi = floor_in(ny * (p2 + rho2 - ua2lo) / P.b2, P.periodic ? -far : -1,
                             P.periodic ? far : ny - 1);
    for (int j = jlo; j <= jhi; ++j) {
        const double v0 = static_cast<double>(j) / ny, v1 = static_cast<double>(j + 1) / ny;
        // x2 = u*a2 + v*b2 - p2 is linear: its range over the voxel comes from the corners.
        const double x2lo = ua2lo + v0 * P.b2 - p2, x2hi = ua2hi + v1 * P.b2 - p2;
        const double d2 = x2lo > 0 ? x2lo : (x2hi < 0 ? -x2hi : 0.0);
        if (d2 > rho2) continue;
        const double rho1 = std::sqrt(rho2 * rho2 - d2 * d2);
        const double s_lo = std::fmin(u0 * P.a1, u1 * P.a1) + std::fmin(v0 * P.b1, v1 * P.b1);
        const double s_hi = std::fmax(u0 * P.a1, u1 * P.a1) + std::fmax(v0 * P.b1, v1 * P.b1);
        const int klo = floor_in(nz * (p1 - rho1 - s_hi) / P.c1, -far, P.periodic ? far : nz);
        const int khi = floor_in(nz * (p1 + rho1 - s_lo) / P.c1, P.periodic ? -far : -1,
                                 P.periodic ? far : nz - 1);
        if (khi >= klo) row(j, klo, khi - klo + 1);
    }
    return true;
}

/// Add len values (voxels k = klo .. klo+len-1 of a row, cyclic in nz) to the row.
PGRID_INLINE void fold_into_row(float* row, int nz, int klo, const float* vals, int len) {
    constexpr int W = VF::W;
    int k = klo % nz;
    if (k < 0) k += nz;
    int m = 0;
    while (m < len) {
        const int run = std::min(len - m, nz - k);  // contiguous part before the row wraps
        int r = 0;
        for (; r + W <= run; r += W)
            (VF::load(row + k + r) + VF::load(vals + m + r)).store(row + k + r);
        for (; r < run; ++r) row[k + r] += vals[m + r];
        m += run;
        k = 0;
    }
}

/// Floats of scratch tric_render_slab / tric_grad_atom need.
PGRID_INLINE std::size_t tric_work_floats(const TricPlan& P) {
    constexpr int W = VF::W;
    return 2 * (static_cast<std::size_t>(P.max_row) + 2 * W) + 4 * (P.q * P.q + W);
}

/// Per-slab quadrature data of atom a: the u nodes' Gaussian factor along e3 and their
/// offsets along e1 and e2, from which each row sets up its (u, v) node pairs.
struct TricNodes {
    const TricPlan* P;
    const TricAtom* a;
    int q, nq;
    double inv_s, pref;
    double n3[detail::kMaxNodes], ua1[detail::kMaxNodes], ua2[detail::kMaxNodes];
    double x3[detail::kMaxNodes];
    float dk;

    /// pref: a3*b2/(nx*ny) (the Jacobian over c1) times the two 1D Gaussian
    /// normalisations; the atom's weight is applied by the caller.
    PGRID_INLINE void slab(const TricPlan& plan, const TricAtom& atom, int i) {
        P = &plan;
        a = &atom;
        q = plan.q;
        nq = q * q;
        const int nx = plan.n[0], ny = plan.n[1], nz = plan.n[2];
        inv_s = 1.0 / atom.sigma;
        pref = plan.a3 * plan.b2 / (nx * static_cast<double>(ny)) * inv_s * inv_s *
               (kInvSqrt2Pi * kInvSqrt2Pi);
        for (int qu = 0; qu < q; ++qu) {
            const double u = (i + plan.gl_x[qu]) / nx;
            x3[qu] = u * plan.a3 - atom.p[2];
            n3[qu] = plan.gl_w[qu] * std::exp(-0.5 * x3[qu] * x3[qu] * inv_s * inv_s);
            ua1[qu] = u * plan.a1;
            ua2[qu] = u * plan.a2;
        }
        dk = static_cast<float>(plan.c1 / nz * inv_s);
    }

    /// For row j starting at voxel klo, per node pair p = qu*q + qv: weight wq[p] (without
    /// the atom weight), erf argument t0[p] at k = klo and x2s[p] = x2 / sigma.
    /// pf is scratch of nq + W floats.
    PGRID_INLINE void row(int j, int klo, float* wq, float* pf, float* t0, float* x2s) const {
        constexpr int W = VF::W;
        const TricPlan& pl = *P;
        const int ny = pl.n[1], nz = pl.n[2];
        const double kofs = klo * (pl.c1 / nz) * inv_s;
        for (int qu = 0, p = 0; qu < q; ++qu) {
            for (int qv = 0; qv < q; ++qv, ++p) {
                const double v = (j + pl.gl_x[qv]) / ny;
                const double x2 = (ua2[qu] + v * pl.b2 - a->p[1]) * inv_s;
                x2s[p] = static_cast<float>(x2);
                wq[p] = static_cast<float>(-0.5 * x2 * x2);
                t0[p] = static_cast<float>((ua1[qu] + v * pl.b1 - a->p[0]) * inv_s + kofs);
                pf[p] = static_cast<float>(pref * n3[qu] * pl.gl_w[qv]);
            }
        }
        // One vector exp for the whole row's Gaussian factors along e2.
        for (int p = 0; p < nq; p += W) (VF::load(pf + p) * vexpf(VF::load(wq + p))).store(wq + p);
    }
};

/// Atom a's contribution to unwrapped slab i, added to plane (ny, nz): per row, the exact
/// erf integral along c combined with Gauss-Legendre over a and b, in float.
/// work: tric_work_floats(P) floats.
PGRID_INLINE void tric_render_slab(const TricPlan& P, const TricAtom& a, int i, float* plane,
                                   float* work, int& jmin, int& jmax) {
    constexpr int W = VF::W;
    const int ny = P.n[1], nz = P.n[2];
    const std::size_t stride = static_cast<std::size_t>(P.max_row) + 2 * W;
    const int nqw = P.q * P.q + W;
    float* acc = work;
    float* wq = work + 2 * stride;
    float* pf = wq + nqw;
    float* t0 = pf + nqw;
    float* x2s = t0 + nqw;
    TricNodes nodes;
    nodes.slab(P, a, i);
    const VF lanes = iota(), step = VF::set1(nodes.dk);
    const float w_atom = static_cast<float>(a.w);
    TricSlab slab;
    tric_rows(P, a, i, slab, [&](int j, int klo, int len) {
        nodes.row(j, klo, wq, pf, t0, x2s);
        for (int m = 0; m < len; m += W) VF::zero().store(acc + m);
        for (int p = 0; p < nodes.nq; ++p) {
            // cdf at the voxel boundaries m = 0 .. len, a vector at a time; the upper
            // boundary of each voxel comes from the next vector by a lane shift.
            const VF t = VF::set1(t0[p]), w = VF::set1(wq[p] * w_atom);
            VF lo = vcdff(fmadd(lanes, step, t));
            for (int m = 0; m < len; m += W) {
                const VF next = vcdff(fmadd(lanes + VF::set1(static_cast<float>(m + W)), step, t));
                fmadd(w, shift_in(lo, next) - lo, VF::load(acc + m)).store(acc + m);
                lo = next;
            }
        }
        int jj = j % ny;
        if (jj < 0) jj += ny;
        fold_into_row(plane + static_cast<std::size_t>(jj) * nz, nz, klo, acc, len);
        if (jj < jmin) jmin = jj;
        if (jj > jmax) jmax = jj;
    });
}

/// dL/dp (frame axes e1, e2, e3) and dL/dw of one atom: the same rows, nodes and float
/// cdfs as tric_render_slab, contracted with the upstream gradient G (nx, ny, nz).
PGRID_INLINE void tric_grad_atom(const TricPlan& P, const TricAtom& a, const float* G, float* work,
                                 double* out4) {
    constexpr int W = VF::W;
    const int nx = P.n[0], ny = P.n[1], nz = P.n[2];
    const std::size_t plane_n = static_cast<std::size_t>(ny) * nz;
    const std::size_t stride = static_cast<std::size_t>(P.max_row) + 2 * W;
    const int nqw = P.q * P.q + W;
    float* grow = work;  // the upstream gradient along the row, unwrapped, zero padded
    float* wq = work + 2 * stride;
    float* pf = wq + nqw;
    float* t0 = pf + nqw;
    float* x2s = t0 + nqw;
    double g1 = 0, g2 = 0, g3 = 0, gw = 0;
    const VF lanes = iota();
    for (int iu = a.i0; iu <= a.i1; ++iu) {
        int i = iu % nx;
        if (i < 0) i += nx;
        TricNodes nodes;
        nodes.slab(P, a, iu);
        const VF step = VF::set1(nodes.dk);
        TricSlab slab;
        tric_rows(P, a, iu, slab, [&](int j, int klo, int len) {
            int jj = j % ny;
            if (jj < 0) jj += ny;
            const float* row = G + i * plane_n + static_cast<std::size_t>(jj) * nz;
            int k = klo % nz;
            if (k < 0) k += nz;
            for (int m = 0; m < len; ++m) {
                grow[m] = row[k];
                if (++k == nz) k = 0;
            }
            for (int m = len; m < len + W; ++m) grow[m] = 0.0f;
            nodes.row(j, klo, wq, pf, t0, x2s);
            for (int p = 0; p < nodes.nq; ++p) {
                const VF t = VF::set1(t0[p]);
                VF plo, pnext;
                VF lo = vcdff<true>(fmadd(lanes, step, t), &plo);
                VF sv = VF::zero(), sd = VF::zero();
                for (int m = 0; m < len; m += W) {
                    const VF arg = fmadd(lanes + VF::set1(static_cast<float>(m + W)), step, t);
                    const VF next = vcdff<true>(arg, &pnext);
                    const VF g = VF::load(grow + m);  // zero past len
                    sv = fmadd(g, shift_in(lo, next) - lo, sv);
                    sd = fmadd(g, shift_in(plo, pnext) - plo, sd);
                    lo = next;
                    plo = pnext;
                }
                const double w = wq[p], v = sv.sum(), d = sd.sum();
                // d/dp1 of the erf difference; d/dp2, d/dp3 of the two Gaussians.
                g1 -= w * d * nodes.inv_s;
                g2 += w * v * x2s[p] * nodes.inv_s;
                g3 += w * v * nodes.x3[p / nodes.q] * nodes.inv_s * nodes.inv_s;
                gw += w * v;
            }
        });
    }
    out4[0] = a.w * g1;
    out4[1] = a.w * g2;
    out4[2] = a.w * g3;
    out4[3] = gw;
}

void render_tric(const TricPlan& P, int c, int i_begin, int i_end, float* out_c, float* plane,
                 float* work, bool stream) {
    // work: tric_work_floats(P) floats, provided by the caller (see kernels.hpp).
    const int nx = P.n[0], ny = P.n[1], nz = P.n[2];
    const std::size_t plane_n = static_cast<std::size_t>(ny) * nz;
    const TricAtom* a_begin = P.atoms + P.chan_begin[c];
    const TricAtom* a_end = P.atoms + P.chan_begin[c + 1];
    for (int i = i_begin; i < i_end; ++i) {
        int jlo = ny, jhi = -1;
        for (const TricAtom* a = a_begin; a != a_end; ++a) {
            // Every unwrapped slab congruent to plane i (all images for periodic cells).
            int first = i;
            if (P.periodic) {
                const int d = a->i0 - i;
                first = i + (d > 0 ? (d + nx - 1) / nx : -((-d) / nx)) * nx;
            } else if (i < a->i0 || i > a->i1) {
                continue;
            }
            for (int iu = first; iu <= a->i1; iu += nx) {
                tric_render_slab(P, *a, iu, plane, work, jlo, jhi);
                if (!P.periodic) break;
            }
        }
        flush_plane(out_c + static_cast<std::size_t>(i) * plane_n, plane, jlo, jhi, nz, plane_n,
                    stream);
    }
    if (stream) store_fence();
}

void grad_tric(const TricPlan& P, int a_begin, int a_end, const float* dgrid, double* dlocal,
               float* work) {
    const std::size_t chan_n = static_cast<std::size_t>(P.n[0]) * P.n[1] * P.n[2];
    for (int ai = a_begin; ai < a_end; ++ai) {
        const TricAtom& a = P.atoms[ai];
        tric_grad_atom(P, a, dgrid + a.channel * chan_n, work, dlocal + 4 * ai);
    }
}

constexpr int kFloatWidth = VF::W;
