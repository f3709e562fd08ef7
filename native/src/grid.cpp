// The public entry points of the density kernel: grid_batch, grid_gradient_batch,
// zero_fill and normal_cdf. They validate the batch (validate.cpp), build plans
// (planner.hpp), and run the per-ISA kernels (dispatch.hpp) over threads (threads.hpp).
#include "pgrid/grid.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cache.hpp"
#include "dispatch.hpp"
#include "planner.hpp"
#include "threads.hpp"

namespace pgrid {
namespace {

using detail::IsaKernels;
using detail::parallel_for;
using detail::Plan;
using detail::PlanBuffers;
using detail::resolve_threads;

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

/// Per-worker scratch for rendering. The triclinic kernel accumulates into `plane` and
/// leaves it zero again; the orthogonal one writes it whole when streaming and leaves it
/// dirty, so it is cleared before the next triclinic use.
struct RenderScratch {
    AlignedFloats plane;
    bool plane_dirty = false;
    std::vector<float> work;
    std::vector<detail::ActiveAtom> active;
};

/// What one thread reuses from call to call (a one-molecule call would otherwise spend
/// more time in malloc than in the kernel): plan buffers, a plan and render scratch.
/// Kept per OS thread — the caller's and each pool worker's — and dropped after a call
/// that grew it past kKeepBytes, so a single huge call does not pin its memory.
struct ThreadScratch {
    PlanBuffers pbuf;
    Plan plan;
    RenderScratch render;
};
constexpr std::size_t kKeepBytes = std::size_t(64) << 20;

ThreadScratch& thread_scratch() {
    thread_local ThreadScratch scratch;
    return scratch;
}

/// Bytes held by a plan's and its buffers' storage (for the kKeepBytes rule).
std::size_t held_bytes(const ThreadScratch& t) {
    const auto& b = t.pbuf;
    std::size_t n = (b.targs.capacity() + b.cdf.capacity() + b.pdf.capacity()) * 8 +
                    t.plan.dbuf.capacity() * 8 + t.plan.fbuf.capacity() * 4 +
                    t.plan.oatoms.capacity() * sizeof(detail::OrthoAtom) +
                    t.plan.yorder.capacity() * 4 + t.render.plane.size * 4 +
                    t.render.work.capacity() * 4;
    for (int d = 0; d < 3; ++d)
        n += (b.fac[d].capacity() + b.dfac[d].capacity() + b.dist2[d].capacity()) * 8;
    return n;
}

void trim(ThreadScratch& t) {
    if (held_bytes(t) > kKeepBytes) t = ThreadScratch{};
}

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
        scratch.plane_dirty = scratch.plane_dirty || stream;
    } else {
        if (scratch.plane_dirty) std::memset(scratch.plane.ptr, 0, scratch.plane.size * 4);
        scratch.plane_dirty = false;
        scratch.work.resize(detail::tric_work_floats(plan.tp, K));
        K.render_tric(plan.tp, c, i_begin, i_end, out_c, scratch.plane.ptr, scratch.work.data(),
                      stream);
    }
}

/// Work below which a call runs on the calling thread whatever `threads` says: waking
/// the pool's workers costs more than they would save (measured: docs/kernel.md,
/// "Threads"). Work is counted in output voxels plus, per atom, the voxels of its 6σ window
/// over 8 (about its vector FMAs; ~350 for a drug-like atom at 32³), times kTricWork in a
/// triclinic cell (quadrature: ~60-75x the orthogonal time).
constexpr double kInlineWork = double(1 << 19);
constexpr double kTricWork = 64.0;

/// Threads for a call whose output holds `voxels` floats. The estimate stops as soon as
/// it passes kInlineWork, so a large batch costs a few structures' worth of it.
int threads_for(const BatchInput& in, std::int64_t voxels, int threads) {
    double work = static_cast<double>(voxels);
    for (std::int64_t s = 0; s < in.n_structures && work < kInlineWork; ++s) {
        const detail::BoxGeom box = detail::box_of(in, s);
        double h[3];
        for (int d = 0; d < 3; ++d) h[d] = detail::norm(box.axis[d]) / in.shape[d];
        const double scale = detail::is_orthogonal(box) ? 1.0 / 8 : kTricWork / 8;
        for (std::int64_t a = in.offsets[s]; a < in.offsets[s + 1]; ++a) {
            const double reach = 2 * kTruncSigmas * in.sigmas[a];
            // Capped per axis at the grid's extent (a window wider than a cell folds).
            double w = scale;
            for (int d = 0; d < 3; ++d) w *= std::min(reach / h[d] + 1, 2.0 * in.shape[d]);
            work += w;
        }
    }
    return work < kInlineWork ? 1 : resolve_threads(threads);
}

}  // namespace

void grid_batch(const BatchInput& in, float* out, const Options& opt) {
    validate(in);
    const IsaKernels& K = detail::kernels_for(opt.isa);
    const std::int64_t B = in.n_structures;
    if (B == 0) return;
    const std::size_t plane_n = static_cast<std::size_t>(in.shape[1]) * in.shape[2];
    const std::size_t chan_n = plane_n * in.shape[0];
    const std::size_t struct_n = chan_n * in.n_channels;
    const int threads = threads_for(in, static_cast<std::int64_t>(struct_n) * B, opt.threads);
    const bool stream = opt.streaming == 1 ||
                        (opt.streaming < 0 && B * struct_n * sizeof(float) > detail::llc_bytes());
    const int nt = static_cast<int>(std::min<std::int64_t>(
        threads, std::max<std::int64_t>(B, 1) * in.n_channels * in.shape[0]));
    if (B >= 2 * nt || nt == 1) {
        // Many structures: one task per structure (plan + every plane), cache-friendly.
        parallel_for(B, nt, [&](std::int64_t s, int) {
            ThreadScratch& t = thread_scratch();
            detail::build_plan(in, s, K, false, t.pbuf, t.plan);
            for (int c = 0; c < in.n_channels; ++c)
                render_planes(t.plan, K, c, 0, in.shape[0], out + s * struct_n + c * chan_n, in,
                              t.render, stream);
            trim(t);
        });
        return;
    }
    // Few structures, several threads: plans first, then slabs of planes in parallel.
    std::vector<RenderScratch> rs(nt);
    std::vector<Plan> plans(B);
    parallel_for(B, nt, [&](std::int64_t s, int) {
        ThreadScratch& t = thread_scratch();
        detail::build_plan(in, s, K, false, t.pbuf, plans[s]);
        trim(t);
    });
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
    const IsaKernels& K = detail::kernels_for(opt.isa);
    const std::int64_t B = in.n_structures;
    if (B == 0) return;
    const std::size_t struct_n =
        static_cast<std::size_t>(in.n_channels) * in.shape[0] * in.shape[1] * in.shape[2];
    const int threads = threads_for(in, static_cast<std::int64_t>(struct_n) * B, opt.threads);
    const int nt =
        static_cast<int>(std::min<std::int64_t>(threads, std::max<std::int64_t>(in.offsets[B], 1)));
    std::vector<PlanBuffers> pbuf(nt);
    std::vector<Plan> plans(B);
    parallel_for(B, nt, [&](std::int64_t s, int tid) {
        detail::build_plan(in, s, K, true, pbuf[tid], plans[s]);
    });
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
            work[tid].resize(detail::tric_work_floats(plan.tp, K));
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
    detail::kernels_for(isa).normal_cdf(t, n, cdf, pdf);
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
