// Building the per-structure plans the kernels read (plan.hpp): orthogonal boxes in
// plan_ortho.cpp, triclinic ones in plan_tric.cpp. Baseline-ISA code that owns every
// allocation; the kernels only see the plain-data views (OrthoPlan, TricPlan).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "geometry.hpp"
#include "kernels.hpp"
#include "pgrid/grid.hpp"
#include "plan.hpp"

namespace pgrid::detail {

/// Per-worker reusable buffers for building plans.
struct PlanBuffers {
    std::vector<double> targs, cdf, pdf;
    std::vector<std::int64_t> arg_off;
    std::vector<std::int32_t> lo, len;  // per atom per axis: unwrapped window start, voxels
    std::vector<double> fac[3], dfac[3], dist2[3];  // one atom's folded factors etc.
};

/// One structure's plan and the storage behind it.
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
    std::vector<std::int32_t> yorder;  // render plans: OrthoPlan::yorder
};

/// Plan structure s of a validated batch: render plans, or with `gradient` the factors the
/// gradient kernels need too. K gives the vector width and the normal cdf.
void build_plan(const BatchInput& in, std::int64_t s, const IsaKernels& K, bool gradient,
                PlanBuffers& buf, Plan& plan);

void build_ortho(const BatchInput& in, std::int64_t s, const BoxGeom& box, const IsaKernels& K,
                 bool gradient, PlanBuffers& buf, Plan& plan);
void build_tric(const BatchInput& in, std::int64_t s, const BoxGeom& box, Plan& plan);

/// Counting sort of atom records by channel, keeping input order within a channel.
template <class AtomT>
void sort_by_channel(std::vector<AtomT>& atoms, int n_channels, std::vector<std::int32_t>& begin) {
    begin.assign(n_channels + 1, 0);
    for (const auto& a : atoms) ++begin[a.channel + 1];
    for (int c = 0; c < n_channels; ++c) begin[c + 1] += begin[c];
    bool in_order = true;  // one channel, or already grouped: nothing to move
    for (std::size_t k = 1; k < atoms.size() && in_order; ++k)
        in_order = atoms[k - 1].channel <= atoms[k].channel;
    if (in_order) return;
    std::vector<AtomT> sorted(atoms.size());
    std::vector<std::int32_t> fill(begin.begin(), begin.end() - 1);
    for (const auto& a : atoms) sorted[fill[a.channel]++] = a;
    atoms.swap(sorted);
}

/// Floats of scratch the triclinic kernels need (see kernels.hpp).
std::size_t tric_work_floats(const TricPlan& tp, const IsaKernels& K);

}  // namespace pgrid::detail
