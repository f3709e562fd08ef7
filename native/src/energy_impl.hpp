// The Lennard-Jones inner loop, written once over the vector type VD (simd_*.hpp) and
// included inside namespace pgrid::<isa> by energy_<isa>.cpp.
#pragma once

inline void lj_points(const detail::LjCandidates& c, const double* pts, int n_points, double rc2,
                      double* e) {
    const VD vrc2 = VD::set1(rc2), zero = VD::set1(0.0), one = VD::set1(1.0),
             cap = VD::set1(detail::kLjMaxS2);
    for (int p = 0; p < n_points; ++p) {
        const VD px = VD::set1(pts[3 * p]), py = VD::set1(pts[3 * p + 1]),
                 pz = VD::set1(pts[3 * p + 2]);
        VD acc0 = zero, acc1 = zero;
        std::int64_t a = 0;
        // Two independent accumulators (the division's latency); kLjPad is a multiple of
        // 2 * VD::W for AVX2, and of VD::W always.
        for (; a + 2 * VD::W <= c.n; a += 2 * VD::W) {
            for (int h = 0; h < 2; ++h) {
                const std::int64_t b = a + h * VD::W;
                const VD dx = VD::load(c.x + b) - px, dy = VD::load(c.y + b) - py,
                         dz = VD::load(c.z + b) - pz;
                const VD r2 = fmadd(dx, dx, fmadd(dy, dy, dz * dz));
                const VD s2 = vmin(VD::load(c.sig2 + b) / r2, cap);
                const VD s6 = s2 * s2 * s2;
                const VD term = VD::load(c.eps4 + b) * s6 * (s6 - one);
                if (h == 0)
                    acc0 = acc0 + select_gt(r2, vrc2, zero, term);
                else
                    acc1 = acc1 + select_gt(r2, vrc2, zero, term);
            }
        }
        for (; a < c.n; a += VD::W) {
            const VD dx = VD::load(c.x + a) - px, dy = VD::load(c.y + a) - py,
                     dz = VD::load(c.z + a) - pz;
            const VD r2 = fmadd(dx, dx, fmadd(dy, dy, dz * dz));
            const VD s2 = vmin(VD::load(c.sig2 + a) / r2, cap);
            const VD s6 = s2 * s2 * s2;
            acc0 = acc0 + select_gt(r2, vrc2, zero, VD::load(c.eps4 + a) * s6 * (s6 - one));
        }
        double lanes[VD::W];
        (acc0 + acc1).store(lanes);
        double sum = 0.0;
        for (int l = 0; l < VD::W; ++l) sum += lanes[l];
        e[p] = sum;
    }
}
