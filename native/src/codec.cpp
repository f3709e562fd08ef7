// Common part of the codec helpers: the step and the restoring of channel totals; the
// per-value passes are per-ISA (codec_impl.hpp, through the table of codec_kernels.hpp).
#include "pgrid/codec.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dispatch.hpp"
#include "errors.hpp"

namespace pgrid {

/// Move |deficit| values of a rounded row one step towards the deficit, choosing values
/// whose residual points that way: the strongest tier first (residual beyond 0.45, then
/// 0.40, ... down to 0), lowest index first within a tier. Every moved value then changes
/// by at most 1 - residual < 1 step in all, as the rounding promises.
void move_toward(const detail::CodecKernels& K, float* row, const float* residual, std::int64_t n,
                 long deficit, std::vector<std::int64_t>& pick) {
    const std::int64_t count = std::labs(deficit);
    const float sign = deficit > 0 ? 1.0f : -1.0f;
    pick.resize(static_cast<std::size_t>(count));
    static const float tiers[] = {0.5f, 0.45f, 0.4f, 0.35f, 0.3f, 0.25f, 0.15f, 0.0f};
    std::int64_t got = 0;
    for (int t = 0; t + 1 < 8 && got < count; ++t)
        got += K.pick_in_tier(residual, n, sign, tiers[t + 1], tiers[t], count - got,
                              pick.data() + got);
    // Residual sums are below n/2, so there are always enough values pointing the way.
    for (std::int64_t k = 0; k < got; ++k) row[pick[k]] += sign;
}

namespace {

/// Throws for the first non-finite value of rows x voxels (none of it is modified).
[[noreturn]] void fail_non_finite(const float* grid, std::int64_t count) {
    std::int64_t i = 0;
    while (i < count && std::isfinite(grid[i])) ++i;
    const float v = i < count ? grid[i] : 0.0f;
    detail::fail("grid holds non-finite values (", std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"),
                 " at flat index ", i, ")");
}

void require_positive_finite(double v, const char* name) {
    if (!(std::isfinite(v) && v > 0))
        detail::fail(name, " must be a positive finite number, got ", v);
}

}  // namespace

double round_grid(float* grid, std::int64_t rows, std::int64_t voxels, double max_step,
                  double relative, Isa isa) {
    const detail::CodecKernels& K = detail::codec_kernels_for(isa);
    require_positive_finite(max_step, "max_step");
    require_positive_finite(relative, "relative");
    std::vector<char> nonzero(static_cast<std::size_t>(rows), 0);
    float peak = 0.0f, largest = 0.0f;
    bool finite = true;
    for (std::int64_t r = 0; r < rows; ++r) {
        float max_abs = 0.0f, max_val = 0.0f;
        bool row_finite = true;
        K.row_extent(grid + r * voxels, voxels, &max_abs, &max_val, &row_finite);
        nonzero[r] = max_abs > 0.0f;
        peak = std::max(peak, max_val);
        largest = std::max(largest, max_abs);
        finite = finite && row_finite;
    }
    // Checked before anything is written: an inf or NaN would make the residuals NaN and
    // the count of values to move garbage.
    if (!finite) fail_non_finite(grid, rows * voxels);
    double step = max_step;
    if (peak > 0.0f)
        step =
            std::min(max_step, std::exp2(std::max(-100.0, std::floor(std::log2(relative * peak)))));
    // value / step and step itself must be float32 numbers: a step outside float32's normal
    // range, or values too many steps large, would round the grid to inf, NaN or zero.
    constexpr double kFloatMax = std::numeric_limits<float>::max();
    if (largest > 0.0f && !(step >= std::numeric_limits<float>::min() && step <= kFloatMax &&
                            largest / step <= 0.5 * kFloatMax))
        detail::fail("rounding step ", step, " cannot be used in float32 for values up to ",
                     largest, ": the step must be between ", std::numeric_limits<float>::min(),
                     " and ", kFloatMax, " and value / step at most ", 0.5 * kFloatMax,
                     " (check max_step and relative)");
    const float inv = static_cast<float>(1.0 / step), fstep = static_cast<float>(step);
    // Per-thread scratch, reused across calls; bound once (a thread_local of a shared
    // library costs a function call per access).
    static thread_local std::vector<float> residual_tls;
    static thread_local std::vector<std::int64_t> candidates_tls;
    std::vector<float>& residual = residual_tls;
    std::vector<std::int64_t>& candidates = candidates_tls;
    residual.resize(static_cast<std::size_t>(voxels));
    for (std::int64_t r = 0; r < rows; ++r) {
        if (!nonzero[r]) continue;
        float* row = grid + r * voxels;
        const double total = K.round_row(row, voxels, inv, residual.data());
        const long deficit = std::lround(total);
        if (deficit != 0) move_toward(K, row, residual.data(), voxels, deficit, candidates);
        K.scale_row(row, voxels, fstep);
    }
    return step;
}

void nonzero_rows(const float* data, std::int64_t rows, std::int64_t voxels, bool* nonzero,
                  Isa isa) {
    const detail::CodecKernels& K = detail::codec_kernels_for(isa);
    for (std::int64_t r = 0; r < rows; ++r) {
        float max_abs = 0.0f, max_val = 0.0f;
        bool finite = true;
        K.row_extent(data + r * voxels, voxels, &max_abs, &max_val, &finite);
        nonzero[r] = max_abs > 0.0f;
    }
}

void shuffle4(const float* in, std::int64_t n, std::uint8_t* out, Isa isa) {
    detail::codec_kernels_for(isa).shuffle4(in, n, out);
}

void unshuffle4(const std::uint8_t* in, std::int64_t n, float* out, Isa isa) {
    detail::codec_kernels_for(isa).unshuffle4(in, n, out);
}

}  // namespace pgrid
