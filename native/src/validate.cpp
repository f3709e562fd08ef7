// Validation of a batch before any of it is used: the grid's shape, the offsets (so that
// no atom is read out of bounds), then every box and atom against the input domain of
// grid.hpp, with messages naming the argument, its index, the structure and the atom.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "geometry.hpp"
#include "pgrid/grid.hpp"

namespace pgrid {

using detail::BoxGeom;
using detail::fail;
using detail::Vec3;

namespace {

void check_box(const BoxGeom& box, std::int64_t s) {
    const Vec3& o = box.origin;
    if (!(std::isfinite(o[0]) && std::isfinite(o[1]) && std::isfinite(o[2])))
        fail("structure ", s, ": box origin is not finite (origins[", s, "] = (", o[0], ", ", o[1],
             ", ", o[2], "))");
    for (int d = 0; d < 3; ++d) {
        const Vec3& a = box.axis[d];
        if (!(std::isfinite(a[0]) && std::isfinite(a[1]) && std::isfinite(a[2])))
            fail("structure ", s, ": box axes are not finite (axes[", s, "][", d, "] = (", a[0],
                 ", ", a[1], ", ", a[2], "))");
    }
    const double la = detail::norm(box.axis[0]), lb = detail::norm(box.axis[1]),
                 lc = detail::norm(box.axis[2]);
    const double vol = std::fabs(detail::dot(box.axis[0], detail::cross(box.axis[1], box.axis[2])));
    if (!(la * lb * lc < std::numeric_limits<double>::infinity()))
        fail("structure ", s,
             ": box axes are too long (the product of their lengths overflows; axes[", s, "])");
    if (!(la > 0 && lb > 0 && lc > 0) || !(vol > 1e-12 * la * lb * lc))
        fail("structure ", s, ": box axes are degenerate (zero length or coplanar; axes[", s, "])");
}

/// Atom a (global index) of structure s, whose first atom is a0.
void check_atom(const BatchInput& in, const BoxGeom& box, const Vec3* recip, std::int64_t s,
                std::int64_t a0, std::int64_t a) {
    const Vec3 p = detail::atom_pos(in, a);
    const auto where = [&](auto&&... parts) {
        fail("structure ", s, ", atom ", a - a0, ": ", parts...);
    };
    if (!(std::isfinite(p[0]) && std::isfinite(p[1]) && std::isfinite(p[2])))
        where("position (", p[0], ", ", p[1], ", ", p[2], ") is not finite (positions[", a, "])");
    const Vec3 rel = detail::sub(p, box.origin);
    for (int d = 0; d < 3; ++d)
        if (!(std::fabs(rel[d]) <= kMaxDistance))
            where("position (", p[0], ", ", p[1], ", ", p[2], ") is more than ", kMaxDistance,
                  " A from the box origin (positions[", a, "])");
    if (box.periodic)
        for (int d = 0; d < 3; ++d) {
            const double f = detail::dot(rel, recip[d]);
            if (!(std::fabs(f) < detail::kMaxCells))
                where("position (", p[0], ", ", p[1], ", ", p[2], ") is ", f,
                      " cells from the periodic box along axis ", d,
                      ": beyond 2^52 cells its place in the cell is not representable (positions[",
                      a, "])");
        }
    const double sg = in.sigmas[a];
    if (!(std::isfinite(sg) && sg > 0))
        where("sigma must be a positive length, got ", sg, " (sigmas[", a, "])");
    if (sg < kMinSigma)
        where("sigma = ", sg, " A is below the smallest supported width, ", kMinSigma,
              " A (sigmas[", a, "])");
    if (sg > kMaxSigma)
        where("sigma = ", sg, " A is above the widest supported width, ", kMaxSigma, " A (sigmas[",
              a, "])");
    const double w = in.weights[a];
    if (!std::isfinite(w)) where("weight is not finite, got ", w, " (weights[", a, "])");
    if (std::fabs(w) > kMaxWeightSum)
        where("weight = ", w,
              " is too large: |weight| (and its sum over a channel) must be at most ",
              kMaxWeightSum, " for the float32 grid to stay finite (weights[", a, "])");
    const int c = in.channels[a];
    if (c < 0 || c >= in.n_channels)
        where("channel ", c, " is out of range [0, ", in.n_channels, ") (channels[", a, "])");
}

/// Sum of |weight| per channel of structure s (atoms [a0, a1)) within kMaxWeightSum.
void check_weight_sums(const BatchInput& in, std::int64_t s, std::int64_t a0, std::int64_t a1) {
    double total = 0.0;
    for (std::int64_t a = a0; a < a1; ++a) total += std::fabs(in.weights[a]);
    if (total <= kMaxWeightSum) return;  // the usual case: no channel can exceed it
    std::vector<std::pair<std::int32_t, double>> by_channel;
    by_channel.reserve(static_cast<std::size_t>(a1 - a0));
    for (std::int64_t a = a0; a < a1; ++a)
        by_channel.emplace_back(in.channels[a], std::fabs(in.weights[a]));
    std::stable_sort(by_channel.begin(), by_channel.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    for (std::size_t i = 0; i < by_channel.size();) {
        const std::int32_t c = by_channel[i].first;
        double sum = 0.0;
        for (; i < by_channel.size() && by_channel[i].first == c; ++i) sum += by_channel[i].second;
        if (sum > kMaxWeightSum)
            fail("structure ", s, ", channel ", c, ": the weights sum to ", sum,
                 " in magnitude, more than ", kMaxWeightSum,
                 ": the float32 grid could overflow (weights[", a0, ":", a1, "])");
    }
}

}  // namespace

void check_grid_shape(std::int64_t n_structures, std::int64_t n_channels,
                      const std::int64_t shape[3], const char* what) {
    if (n_structures < 0) fail(what, ": negative number of structures (", n_structures, ")");
    if (n_channels < 1) fail("n_channels must be at least 1, got ", n_channels);
    if (n_channels > kMaxAxisVoxels)
        fail(what, ": at most ", kMaxAxisVoxels, " channels, got ", n_channels);
    for (int d = 0; d < 3; ++d) {
        if (shape[d] < 1) fail("grid shape must be positive, got ", shape[d], " along axis ", d);
        if (shape[d] > kMaxAxisVoxels)
            fail(what, ": at most ", kMaxAxisVoxels, " voxels per axis, got ", shape[d],
                 " along axis ", d);
    }
    // B * C * nx * ny * nz floats must be addressable: multiply step by step, stopping
    // before the product could overflow.
    const std::int64_t limit =
        std::numeric_limits<std::ptrdiff_t>::max() / static_cast<std::int64_t>(sizeof(float));
    std::int64_t total = 1;
    for (const std::int64_t f : {n_channels, shape[0], shape[1], shape[2], n_structures}) {
        if (f != 0 && total > limit / f)
            fail(what, ": a grid of ", n_structures, " x ", n_channels, " x ", shape[0], " x ",
                 shape[1], " x ", shape[2], " floats is too large to address");
        total *= f;
    }
}

void validate(const BatchInput& in) {
    const std::int64_t shape[3] = {in.shape[0], in.shape[1], in.shape[2]};
    check_grid_shape(in.n_structures, in.n_channels, shape, "the grid");
    if (in.n_structures == 0) return;
    if (in.offsets[0] != 0) fail("atom offsets must start at 0, got ", in.offsets[0]);
    if (in.offsets[in.n_structures] != in.n_atoms)
        fail("atom offsets must end at the number of atoms (", in.n_atoms, "), got ",
             in.offsets[in.n_structures]);
    // Every offset first: non-decreasing from 0 to M bounds them all before any atom is read.
    for (std::int64_t s = 0; s < in.n_structures; ++s) {
        if (in.offsets[s + 1] < in.offsets[s])
            fail("atom offsets must be non-decreasing (structure ", s, ")");
        if (in.offsets[s + 1] - in.offsets[s] > std::numeric_limits<std::int32_t>::max())
            fail("atom offsets: structure ", s, " has ", in.offsets[s + 1] - in.offsets[s],
                 " atoms, more than ", std::numeric_limits<std::int32_t>::max());
    }
    for (std::int64_t s = 0; s < in.n_structures; ++s) {
        const std::int64_t a0 = in.offsets[s], a1 = in.offsets[s + 1];
        const BoxGeom box = detail::box_of(in, s);
        check_box(box, s);
        Vec3 recip[3];
        if (box.periodic) detail::reciprocal_rows(box, recip);
        for (std::int64_t a = a0; a < a1; ++a) check_atom(in, box, recip, s, a0, a);
        check_weight_sums(in, s, a0, a1);
    }
}

}  // namespace pgrid
