// Common (baseline-ISA) part of the kernel: validation, CPU dispatch, plan building and
// threading. The numeric inner loops live in kernel_impl.hpp, compiled once per ISA.
#include "pgrid/grid.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <unistd.h>
#endif

#include "kernels.hpp"
#include "plan.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#define PGRID_X86 1
#else
#define PGRID_X86 0
#endif

namespace pgrid {
namespace {

using detail::IsaKernels;
using detail::OrthoAtom;
using detail::OrthoPlan;
using detail::TricAtom;
using detail::TricPlan;
using detail::ZSeg;
using Vec3 = std::array<double, 3>;

// ------------------------------------------------------------------ small helpers
double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }
Vec3 cross(const Vec3& a, const Vec3& b) {
    return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
Vec3 scaled(const Vec3& a, double s) { return {a[0] * s, a[1] * s, a[2] * s}; }
Vec3 sub(const Vec3& a, const Vec3& b) { return {a[0] - b[0], a[1] - b[1], a[2] - b[2]}; }

template <class... Args>
[[noreturn]] void fail(Args&&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    throw std::invalid_argument(os.str());
}

struct BoxGeom {
    Vec3 origin;
    Vec3 axis[3];  // whole-box edge vectors
    bool periodic;
};

BoxGeom box_of(const BatchInput& in, std::int64_t s) {
    BoxGeom b;
    for (int d = 0; d < 3; ++d) {
        b.origin[d] = in.origins[3 * s + d];
        for (int e = 0; e < 3; ++e) b.axis[d][e] = in.axes[9 * s + 3 * d + e];
    }
    b.periodic = in.periodic[s] != 0;
    return b;
}

/// Mutually perpendicular edges (to 1e-9 relative): the exact separable path applies.
bool is_orthogonal(const BoxGeom& b) {
    const double la = norm(b.axis[0]), lb = norm(b.axis[1]), lc = norm(b.axis[2]);
    return std::fabs(dot(b.axis[0], b.axis[1])) <= 1e-9 * la * lb &&
           std::fabs(dot(b.axis[0], b.axis[2])) <= 1e-9 * la * lc &&
           std::fabs(dot(b.axis[1], b.axis[2])) <= 1e-9 * lb * lc;
}

Vec3 atom_pos(const BatchInput& in, std::int64_t a) {
    return {in.positions[3 * a], in.positions[3 * a + 1], in.positions[3 * a + 2]};
}

// ------------------------------------------------------------------ CPU dispatch
bool cpu_has(Isa isa) {
    if (isa == Isa::scalar) return true;
#if PGRID_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    // libgcc / compiler-rt also check that the OS saves the wide registers (XCR0).
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == Isa::avx2) return avx2;
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

const IsaKernels& kernels_for(Isa isa) {
    if (!cpu_has(isa)) fail("instruction set ", isa_name(isa), " is not supported by this CPU");
#if PGRID_X86
    if (isa == Isa::avx512) return detail::kernels_avx512();
    if (isa == Isa::avx2) return detail::kernels_avx2();
#endif
    return detail::kernels_scalar();
}

}  // namespace

namespace detail {
const IsaKernels& kernels_checked(Isa isa) { return kernels_for(isa); }
}  // namespace detail

namespace {

int resolve_threads(int threads) { return threads > 0 ? threads : hardware_threads(); }

// ------------------------------------------------------------------ threading
/// Run f(item, worker) for item in [0, n) on up to `threads` threads. Items are
/// independent and each writes its own output, so results do not depend on the split.
template <class F>
void parallel_for(std::int64_t n, int threads, F&& f) {
    if (n <= 0) return;
    const int nt = static_cast<int>(std::min<std::int64_t>(threads, n));
    if (nt <= 1) {
        for (std::int64_t i = 0; i < n; ++i) f(i, 0);
        return;
    }
    std::atomic<std::int64_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&](int tid) {
        try {
            for (;;) {
                const std::int64_t i = next.fetch_add(1, std::memory_order_relaxed);
                if (i >= n) break;
                f(i, tid);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next.store(n);
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    for (int t = 1; t < nt; ++t) pool.emplace_back(worker, t);
    worker(0);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

/// 64-byte aligned, zero-initialised float scratch.
struct AlignedFloats {
    std::vector<float> store;
    float* ptr = nullptr;
    std::size_t size = 0;
    void ensure(std::size_t n) {
        if (n <= size) return;
        store.assign(n + 16, 0.0f);
        auto addr = reinterpret_cast<std::uintptr_t>(store.data());
        ptr = store.data() + ((64 - addr % 64) % 64) / sizeof(float);
        size = n;
    }
};

// ------------------------------------------------------------------ quadrature
/// Gauss-Legendre nodes and weights on [0, 1] (weights sum to 1), by Newton iteration.
void gauss_legendre_panel(int q, double* x, double* w) {
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < q; ++i) {
        double z = std::cos(pi * (i + 0.75) / (q + 0.5));
        double dp = 1.0;
        for (int it = 0; it < 100; ++it) {
            double p0 = 1.0, p1 = 0.0;
            for (int k = 1; k <= q; ++k) {
                const double p2 = p1;
                p1 = p0;
                p0 = ((2.0 * k - 1.0) * z * p1 - (k - 1.0) * p2) / k;
            }
            dp = q * (z * p0 - p1) / (z * z - 1.0);
            const double dz = p0 / dp;
            z -= dz;
            if (std::fabs(dz) < 1e-16) break;
        }
        x[i] = 0.5 * (1.0 - z);
        w[i] = 1.0 / ((1.0 - z * z) * dp * dp);  // = (2/((1-z^2) P'^2)) / 2 on [0, 1]
    }
}

/// `nodes` points on [0, 1]: one Gauss-Legendre rule up to 16 nodes, else composite rules
/// of 8-node panels (see triclinic_quadrature_order).
void gauss_legendre(int nodes, std::vector<double>& x, std::vector<double>& w) {
    x.assign(nodes, 0.0);
    w.assign(nodes, 0.0);
    const int q = nodes <= 16 ? nodes : 8, panels = nodes / q;
    std::vector<double> px(q), pw(q);
    gauss_legendre_panel(q, px.data(), pw.data());
    for (int s = 0; s < panels; ++s)
        for (int i = 0; i < q; ++i) {
            x[s * q + i] = (s + px[i]) / panels;
            w[s * q + i] = pw[i] / panels;
        }
}

// ------------------------------------------------------------------ plans
/// Per-worker reusable buffers for building plans.
struct PlanBuffers {
    std::vector<double> targs, cdf, pdf;
    std::vector<std::int64_t> arg_off;
    std::vector<std::int32_t> lo, len;  // per atom per axis: unwrapped window start, voxels
    std::vector<double> fac[3], dfac[3], dist2[3];  // one atom's folded factors etc.
};

struct Plan {
    bool ortho = true;
    Vec3 frame[3];  // local axis d in Cartesian coordinates
    // orthogonal
    std::vector<OrthoAtom> oatoms;
    std::vector<double> dbuf;
    std::vector<float> fbuf;
    OrthoPlan op{};
    // triclinic
    std::vector<TricAtom> tatoms;
    std::vector<double> gl_x, gl_w;
    TricPlan tp{};
    std::vector<std::int32_t> chan_begin;
};

/// Counting sort of atom records by channel, keeping input order within a channel.
template <class AtomT>
void sort_by_channel(std::vector<AtomT>& atoms, int n_channels, std::vector<std::int32_t>& begin) {
    begin.assign(n_channels + 1, 0);
    for (const auto& a : atoms) ++begin[a.channel + 1];
    for (int c = 0; c < n_channels; ++c) begin[c + 1] += begin[c];
    std::vector<AtomT> sorted(atoms.size());
    std::vector<std::int32_t> fill(begin.begin(), begin.end() - 1);
    for (const auto& a : atoms) sorted[fill[a.channel]++] = a;
    atoms.swap(sorted);
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
    // y: the window's rows (all rows if it wraps) with kPadJ padding on each side.
    const bool ywrap = start[1] + length[1] > ny;
    rec.jlo = ywrap ? 0 : start[1];
    rec.jhi = ywrap ? ny - 1 : start[1] + length[1] - 1;
    rec.jfirst = rec.jlo - kPadJ;
    rec.ylen = rec.jhi - rec.jlo + 1 + 2 * kPadJ;
    rec.yfoff = static_cast<std::int64_t>(plan.fbuf.size());
    plan.fbuf.resize(plan.fbuf.size() + 2 * static_cast<std::size_t>(rec.ylen), 0.0f);
    float* gy = plan.fbuf.data() + rec.yfoff;
    float* dy2 = gy + rec.ylen;
    std::fill(dy2, dy2 + rec.ylen, std::numeric_limits<float>::infinity());
    for (int m = 0; m < length[1]; ++m) {
        const int j = (start[1] + m) % ny - rec.jfirst;
        gy[j] = static_cast<float>(fac[1][m]);
        dy2[j] = static_cast<float>(dist2[1][m]);
    }
    rec.zfoff = static_cast<std::int64_t>(plan.fbuf.size());
    plan.fbuf.resize(plan.fbuf.size() + static_cast<std::size_t>(row_vecs + kPadV) * W, 0.0f);
    float* gz = plan.fbuf.data() + rec.zfoff;
    for (int m = 0; m < length[2]; ++m) gz[(start[2] + m) % nz] = static_cast<float>(fac[2][m]);
    const bool zwrap = start[2] + length[2] > nz;
    rec.kv0 = zwrap ? 0 : start[2] / W;
    rec.kv1 = zwrap ? row_vecs : (start[2] + length[2] - 1) / W + 1;
}

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
    for (std::int64_t a = 0; a < na; ++a) {
        const Vec3 rel = sub(atom_pos(in, a0 + a), box.origin);
        const double sigma = in.sigmas[a0 + a];
        for (int d = 0; d < 3; ++d) {
            const int n = in.shape[d];
            const double p = dot(rel, plan.frame[d]);
            const double reach = kTruncSigmas * sigma;
            double flo = std::floor((p - reach) / h[d]), fhi = std::floor((p + reach) / h[d]);
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
    sort_by_channel(plan.oatoms, in.n_channels, plan.chan_begin);
    OrthoPlan& op = plan.op;
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
    double min_sigma = 0.0;
    int max_row = 1;
    plan.tatoms.clear();
    for (std::int64_t a = a0; a < a1; ++a) {
        TricAtom t{};
        t.atom = a;
        t.channel = in.channels[a];
        t.sigma = in.sigmas[a];
        t.w = in.weights[a];
        const Vec3 rel = sub(atom_pos(in, a), box.origin);
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
        if (!box.periodic) {
            flo = std::max(flo, 0.0);
            fhi = std::min(fhi, in.shape[0] - 1.0);
        }
        t.i0 = static_cast<std::int32_t>(flo);
        t.i1 = static_cast<std::int32_t>(fhi);  // i1 < i0: nothing inside an open box
        min_sigma = (a == a0) ? t.sigma : std::min(min_sigma, t.sigma);
        const double row =
            (2.0 * reach + std::fabs(tp.a1) / in.shape[0] + std::fabs(tp.b1) / in.shape[1]) *
                in.shape[2] / tp.c1 +
            3.0;
        max_row = std::max(max_row, static_cast<int>(std::min<double>(row, 1e9)));
        plan.tatoms.push_back(t);
    }
    if (!box.periodic) max_row = std::min(max_row, in.shape[2]);
    tp.max_row = max_row;
    // Quadrature order from the coarsest voxel edge relative to the narrowest Gaussian.
    const double h = std::max(norm(A) / in.shape[0], norm(B) / in.shape[1]);
    tp.q = triclinic_quadrature_order(min_sigma > 0 ? h / min_sigma : 1.0);
    gauss_legendre(tp.q, plan.gl_x, plan.gl_w);
    tp.gl_x = plan.gl_x.data();
    tp.gl_w = plan.gl_w.data();
    sort_by_channel(plan.tatoms, in.n_channels, plan.chan_begin);
    tp.atoms = plan.tatoms.data();
    tp.chan_begin = plan.chan_begin.data();
    tp.n_atoms = static_cast<std::int32_t>(plan.tatoms.size());
}

void build_plan(const BatchInput& in, std::int64_t s, const IsaKernels& K, bool gradient,
                PlanBuffers& buf, Plan& plan) {
    const BoxGeom box = box_of(in, s);
    plan.ortho = is_orthogonal(box);
    if (plan.ortho)
        build_ortho(in, s, box, K, gradient, buf, plan);
    else
        build_tric(in, s, box, plan);
}

/// Floats of scratch the triclinic kernels need (see kernels.hpp).
std::size_t tric_work_floats(const TricPlan& tp, const IsaKernels& K) {
    const std::size_t w = K.float_width;
    return 2 * (static_cast<std::size_t>(tp.max_row) + 2 * w) +
           4 * (static_cast<std::size_t>(tp.q) * tp.q + w);
}

/// Per-worker scratch for rendering.
struct RenderScratch {
    AlignedFloats plane;
    std::vector<float> work;
    std::vector<detail::ActiveAtom> active;
};

void render_planes(const Plan& plan, const IsaKernels& K, int c, int i_begin, int i_end,
                   float* out_c, const BatchInput& in, RenderScratch& scratch, bool stream) {
    const std::size_t plane_n = static_cast<std::size_t>(in.shape[1]) * in.shape[2];
    scratch.plane.ensure(plane_n + 64);
    if (plan.ortho) {
        const std::size_t atoms =
            static_cast<std::size_t>(plan.chan_begin[c + 1] - plan.chan_begin[c]);
        if (scratch.active.size() < atoms) scratch.active.resize(atoms);
        K.render_ortho(plan.op, c, i_begin, i_end, out_c, scratch.plane.ptr, scratch.active.data(),
                       stream);
    } else {
        scratch.work.resize(tric_work_floats(plan.tp, K));
        K.render_tric(plan.tp, c, i_begin, i_end, out_c, scratch.plane.ptr, scratch.work.data(),
                      stream);
    }
}

/// Size of the last-level cache one core sees: streaming stores pay off for outputs
/// larger than this. Linux's sysfs gives the cache of cpu0's own L3 instance; sysconf can
/// report a whole host's L3 under a hypervisor (384 MB on a 32 MB VM), so it is second.
std::size_t llc_bytes() {
    static const std::size_t bytes = [] {
#if defined(__linux__)
        if (std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r")) {
            unsigned long long v = 0;
            char unit = 0;
            const int got = std::fscanf(f, "%llu%c", &v, &unit);
            std::fclose(f);
            if (got >= 1 && v > 0) {
                const unsigned long long scale = unit == 'K'   ? 1ull << 10
                                                 : unit == 'M' ? 1ull << 20
                                                               : 1;
                return static_cast<std::size_t>(v * scale);
            }
        }
#endif
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
        const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
        if (l3 > 0) return static_cast<std::size_t>(l3);
#endif
        return std::size_t(32) << 20;
    }();
    return bytes;
}

}  // namespace

// ------------------------------------------------------------------ public API
int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512:
            return "avx512";
        case Isa::avx2:
            return "avx2";
        default:
            return "scalar";
    }
}

Isa parse_isa(const std::string& name) {
    if (name == "scalar") return Isa::scalar;
    if (name == "avx2") return Isa::avx2;
    if (name == "avx512") return Isa::avx512;
    fail("unknown instruction set '", name, "' (expected scalar, avx2 or avx512)");
}

std::vector<Isa> supported_isas() {
    std::vector<Isa> out{Isa::scalar};
    if (cpu_has(Isa::avx2)) out.push_back(Isa::avx2);
    if (cpu_has(Isa::avx512)) out.push_back(Isa::avx512);
    return out;
}

Isa best_isa() { return supported_isas().back(); }

int triclinic_quadrature_order(double h_over_sigma) {
    // Largest voxel edge (in sigmas) each Gauss-Legendre order integrates to 5e-6 of the
    // peak along one direction (measured by tools/quadrature_orders.py); two quadrature
    // directions keep a voxel within 1e-5 of the maximum, 10x inside the SPEC's 1e-4.
    static const double limits[] = {0.0,  0.0,  0.29, 0.93, 1.75, 2.62,  3.49,  4.37, 5.23,
                                    6.09, 6.95, 7.80, 8.65, 9.50, 10.34, 11.17, 12.00};
    for (int q = 2; q <= 16; ++q)
        if (h_over_sigma <= limits[q]) return q;
    // Coarser voxels: a composite rule of 8-node panels, each panel within the Q = 8 limit.
    const int panels = static_cast<int>(std::ceil(h_over_sigma / limits[8]));
    if (panels > kMaxQuadratureNodes / 8)
        fail("sigma is too narrow for these triclinic voxels (voxel edge = ", h_over_sigma,
             " sigma; at most ", kMaxQuadratureNodes / 8 * limits[8],
             "): use a wider sigma or a finer grid");
    return 8 * panels;
}

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
        const BoxGeom box = box_of(in, s);
        for (int d = 0; d < 3; ++d) {
            if (!std::isfinite(box.origin[d])) fail("structure ", s, ": box origin is not finite");
            for (int e = 0; e < 3; ++e)
                if (!std::isfinite(box.axis[d][e]))
                    fail("structure ", s, ": box axes are not finite");
        }
        const double la = norm(box.axis[0]), lb = norm(box.axis[1]), lc = norm(box.axis[2]);
        const double vol = std::fabs(dot(box.axis[0], cross(box.axis[1], box.axis[2])));
        if (!(la > 0 && lb > 0 && lc > 0) || !(vol > 1e-12 * la * lb * lc))
            fail("structure ", s, ": box axes are degenerate (zero length or coplanar)");
        for (std::int64_t a = a0; a < a1; ++a) {
            const Vec3 p = atom_pos(in, a);
            if (!(std::isfinite(p[0]) && std::isfinite(p[1]) && std::isfinite(p[2])))
                fail("structure ", s, ", atom ", a - a0, ": position (", p[0], ", ", p[1], ", ",
                     p[2], ") is not finite");
            const double sg = in.sigmas[a];
            if (!(std::isfinite(sg) && sg > 0))
                fail("structure ", s, ", atom ", a - a0, ": sigma must be a positive length, got ",
                     sg);
            if (!std::isfinite(in.weights[a]))
                fail("structure ", s, ", atom ", a - a0, ": weight is not finite");
            const int c = in.channels[a];
            if (c < 0 || c >= in.n_channels)
                fail("structure ", s, ", atom ", a - a0, ": channel ", c, " is out of range [0, ",
                     in.n_channels, ")");
        }
    }
}

void grid_batch(const BatchInput& in, float* out, const Options& opt) {
    validate(in);
    const IsaKernels& K = kernels_for(opt.isa);
    const std::int64_t B = in.n_structures;
    if (B == 0) return;
    const int threads = resolve_threads(opt.threads);
    const std::size_t plane_n = static_cast<std::size_t>(in.shape[1]) * in.shape[2];
    const std::size_t chan_n = plane_n * in.shape[0];
    const std::size_t struct_n = chan_n * in.n_channels;
    const bool stream =
        opt.streaming == 1 || (opt.streaming < 0 && B * struct_n * sizeof(float) > llc_bytes());
    const int nt = static_cast<int>(std::min<std::int64_t>(
        threads, std::max<std::int64_t>(B, 1) * in.n_channels * in.shape[0]));
    std::vector<PlanBuffers> pbuf(nt);
    std::vector<RenderScratch> rs(nt);
    if (B >= 2 * nt || nt == 1) {
        // Many structures: one task per structure (plan + every plane), cache-friendly.
        std::vector<Plan> plans(nt);
        parallel_for(B, nt, [&](std::int64_t s, int tid) {
            build_plan(in, s, K, false, pbuf[tid], plans[tid]);
            for (int c = 0; c < in.n_channels; ++c)
                render_planes(plans[tid], K, c, 0, in.shape[0], out + s * struct_n + c * chan_n, in,
                              rs[tid], stream);
        });
        return;
    }
    // Few structures, several threads: plans first, then slabs of planes in parallel.
    std::vector<Plan> plans(B);
    parallel_for(
        B, nt, [&](std::int64_t s, int tid) { build_plan(in, s, K, false, pbuf[tid], plans[s]); });
    const int chunks = std::max(
        1, std::min(in.shape[0], (4 * nt + static_cast<int>(B) - 1) / static_cast<int>(B)));
    const std::int64_t per_struct = static_cast<std::int64_t>(in.n_channels) * chunks;
    parallel_for(B * per_struct, nt, [&](std::int64_t item, int tid) {
        const std::int64_t s = item / per_struct;
        const int c = static_cast<int>((item % per_struct) / chunks);
        const int k = static_cast<int>(item % chunks);
        const int i0 = static_cast<int>(static_cast<std::int64_t>(in.shape[0]) * k / chunks);
        const int i1 = static_cast<int>(static_cast<std::int64_t>(in.shape[0]) * (k + 1) / chunks);
        render_planes(plans[s], K, c, i0, i1, out + s * struct_n + c * chan_n, in, rs[tid], stream);
    });
}

void grid_gradient_batch(const BatchInput& in, const float* dgrid, double* dpositions,
                         double* dweights, const Options& opt) {
    validate(in);
    const IsaKernels& K = kernels_for(opt.isa);
    const std::int64_t B = in.n_structures;
    if (B == 0) return;
    const int threads = resolve_threads(opt.threads);
    const std::size_t struct_n =
        static_cast<std::size_t>(in.n_channels) * in.shape[0] * in.shape[1] * in.shape[2];
    const int nt =
        static_cast<int>(std::min<std::int64_t>(threads, std::max<std::int64_t>(in.offsets[B], 1)));
    std::vector<PlanBuffers> pbuf(nt);
    std::vector<Plan> plans(B);
    parallel_for(B, nt,
                 [&](std::int64_t s, int tid) { build_plan(in, s, K, true, pbuf[tid], plans[s]); });
    // Work items: chunks of at most 8 atoms of one structure; each atom's gradient is
    // computed by exactly one item, so the result does not depend on the thread count.
    constexpr int kChunk = 8;
    std::vector<std::int64_t> item_begin(B + 1, 0);
    for (std::int64_t s = 0; s < B; ++s) {
        const std::int64_t na = in.offsets[s + 1] - in.offsets[s];
        item_begin[s + 1] = item_begin[s] + (na + kChunk - 1) / kChunk;
    }
    std::vector<std::vector<double>> dlocal(B);
    for (std::int64_t s = 0; s < B; ++s)
        dlocal[s].assign(4 * static_cast<std::size_t>(in.offsets[s + 1] - in.offsets[s]), 0.0);
    std::vector<std::vector<float>> work(nt);
    parallel_for(item_begin[B], nt, [&](std::int64_t item, int tid) {
        const std::int64_t s =
            std::upper_bound(item_begin.begin(), item_begin.end(), item) - item_begin.begin() - 1;
        const Plan& plan = plans[s];
        const int a_begin = static_cast<int>((item - item_begin[s]) * kChunk);
        const std::int64_t na = in.offsets[s + 1] - in.offsets[s];
        const int a_end = static_cast<int>(std::min<std::int64_t>(na, a_begin + kChunk));
        const float* G = dgrid + s * struct_n;
        if (plan.ortho) {
            K.grad_ortho(plan.op, a_begin, a_end, G, dlocal[s].data());
        } else {
            work[tid].resize(tric_work_floats(plan.tp, K));
            K.grad_tric(plan.tp, a_begin, a_end, G, dlocal[s].data(), work[tid].data());
        }
    });
    // Back to Cartesian, in the input's atom order (plans are sorted by channel).
    for (std::int64_t s = 0; s < B; ++s) {
        const Plan& plan = plans[s];
        const std::int64_t na = in.offsets[s + 1] - in.offsets[s];
        for (std::int64_t k = 0; k < na; ++k) {
            const std::int64_t atom = plan.ortho ? plan.oatoms[k].atom : plan.tatoms[k].atom;
            const double* dl = dlocal[s].data() + 4 * k;
            for (int e = 0; e < 3; ++e)
                dpositions[3 * atom + e] =
                    dl[0] * plan.frame[0][e] + dl[1] * plan.frame[1][e] + dl[2] * plan.frame[2][e];
            if (dweights) dweights[atom] = dl[3];
        }
    }
}

void normal_cdf(const double* t, std::size_t n, double* cdf, double* pdf, Isa isa) {
    kernels_for(isa).normal_cdf(t, n, cdf, pdf);
}

void zero_fill(float* out, std::size_t count, int threads) {
    const int nt = resolve_threads(threads);
    constexpr std::size_t kBlock = std::size_t(1) << 18;  // 1 MiB of floats per task
    const std::int64_t blocks = static_cast<std::int64_t>((count + kBlock - 1) / kBlock);
    parallel_for(blocks, nt, [&](std::int64_t b, int) {
        const std::size_t lo = static_cast<std::size_t>(b) * kBlock;
        const std::size_t n = std::min(kBlock, count - lo);
        std::memset(out + lo, 0, n * sizeof(float));
    });
}

}  // namespace pgrid
