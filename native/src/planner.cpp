// Choosing the plan kind of a structure (see planner.hpp).
#include "planner.hpp"

namespace pgrid::detail {

void build_plan(const BatchInput& in, std::int64_t s, const IsaKernels& K, bool gradient,
                PlanBuffers& buf, Plan& plan) {
    const BoxGeom box = box_of(in, s);
    plan.ortho = is_orthogonal(box);
    if (plan.ortho)
        build_ortho(in, s, box, K, gradient, buf, plan);
    else
        build_tric(in, s, box, plan);
}

std::size_t tric_work_floats(const TricPlan& tp, const IsaKernels& K) {
    const std::size_t w = K.float_width;
    return 2 * (static_cast<std::size_t>(tp.max_row) + 2 * w) +
           4 * (static_cast<std::size_t>(tp.q) * tp.q + w);
}

}  // namespace pgrid::detail
