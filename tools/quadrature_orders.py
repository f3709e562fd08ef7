"""Calibrate the Gauss-Legendre orders of the triclinic path (native/src/grid.cpp).

For a voxel edge of h (in units of sigma), relative_error(h, Q) is the largest error of the
Q-point rule over any atom position, relative to the largest exact voxel mass. This prints

    python tools/quadrature_orders.py

and the largest edge each order handles; triclinic_quadrature_order() uses the smallest
Q whose error is <= 5e-6 at that edge (beyond Q = 16: composite rules of Q = 8 panels).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr


def relative_error(h: float, q: int) -> float:
    x, w = np.polynomial.legendre.leggauss(q)
    x = (x + 1) / 2 * h
    w = w / 2 * h
    centres = np.linspace(-6, 6 + h, 4001)
    exact = ndtr(h - centres) - ndtr(-centres)
    gauss = np.exp(-0.5 * (x[None, :] - centres[:, None]) ** 2) / np.sqrt(2 * np.pi)
    approx = (w[None, :] * gauss).sum(axis=1)
    return float(np.max(np.abs(approx - exact)) / np.max(exact))


TOLERANCE = 5e-6


def limit(q: int) -> float:
    """Largest edge h (sigmas) with relative_error(h, q) <= TOLERANCE, by bisection."""
    lo, hi = 0.0, 40.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if relative_error(mid, q) <= TOLERANCE else (lo, mid)
    return lo


def main() -> None:
    limits = [limit(q) for q in range(2, 17)]
    print("largest h/sigma per order Q (error <= 5e-6):")
    for q, h in zip(range(2, 17), limits, strict=True):
        print(f"  Q{q:<2} {h:6.3f}")
    # The kernel's table rounds each limit down to 2 decimals.
    print("C++ table:", ", ".join(f"{int(h * 100) / 100:.2f}" for h in limits))


if __name__ == "__main__":
    main()
