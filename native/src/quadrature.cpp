// Gauss-Legendre quadrature for the triclinic path: the nodes and weights, and the order
// a voxel of a given size (in sigmas) needs.
#include "quadrature.hpp"

#include <cmath>
#include <vector>

#include "errors.hpp"
#include "pgrid/grid.hpp"

namespace pgrid {
namespace detail {
namespace {

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

}  // namespace

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

}  // namespace detail

namespace {
// Largest voxel edge (in sigmas) each Gauss-Legendre order integrates to 5e-6 of the
// peak along one direction (measured by tools/quadrature_orders.py); two quadrature
// directions keep a voxel within 1e-5 of the maximum, 10x inside the SPEC's 1e-4.
constexpr double kOrderLimits[] = {0.0,  0.0,  0.29, 0.93, 1.75, 2.62,  3.49,  4.37, 5.23,
                                   6.09, 6.95, 7.80, 8.65, 9.50, 10.34, 11.17, 12.00};
}  // namespace

double max_triclinic_h_over_sigma() { return kMaxQuadratureNodes / 8 * kOrderLimits[8]; }

int triclinic_quadrature_order(double h_over_sigma) {
    if (!(h_over_sigma >= 0))
        detail::fail("h_over_sigma must be a non-negative number, got ", h_over_sigma);
    for (int q = 2; q <= 16; ++q)
        if (h_over_sigma <= kOrderLimits[q]) return q;
    // Coarser voxels: a composite rule of 8-node panels, each panel within the Q = 8 limit.
    // (Compared in double: a huge ratio must not overflow the panel count.)
    const double panels = std::ceil(h_over_sigma / kOrderLimits[8]);
    if (panels > kMaxQuadratureNodes / 8)
        detail::fail("sigma is too narrow for these triclinic voxels (voxel edge = ", h_over_sigma,
                     " sigma; at most ", max_triclinic_h_over_sigma(),
                     "): use a wider sigma or a finer grid");
    return 8 * static_cast<int>(panels);
}

}  // namespace pgrid
