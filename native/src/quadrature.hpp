// Gauss-Legendre rules for the triclinic path (the order itself is public:
// pgrid::triclinic_quadrature_order).
#pragma once

#include <vector>

namespace pgrid::detail {

/// `nodes` points on [0, 1] and their weights (summing to 1): one Gauss-Legendre rule up
/// to 16 nodes, else composite rules of 8-node panels (see triclinic_quadrature_order).
void gauss_legendre(int nodes, std::vector<double>& x, std::vector<double>& w);

}  // namespace pgrid::detail
