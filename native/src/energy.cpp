// Lennard-Jones energy grids (pgrid/energy.hpp): validation at the boundary, the atom
// images within the cutoff of the grid, a cell list of them, and tiles of grid points
// handed to threads. Each tile gathers the images within the cutoff of its bounding box
// (from the cell list) and the per-ISA loop (energy_impl.hpp) sums them per point.
#include "pgrid/energy.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "dispatch.hpp"
#include "energy_kernels.hpp"
#include "errors.hpp"
#include "threads.hpp"

namespace pgrid {
namespace detail {
namespace {

using Vec3 = std::array<double, 3>;

const EnergyKernels& energy_kernels_for(Isa isa) {
    if (!cpu_has(isa)) fail("instruction set ", isa_name(isa), " is not supported by this CPU");
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == Isa::avx512) return energy_kernels_avx512();
    if (isa == Isa::avx2) return energy_kernels_avx2();
#endif
    return energy_kernels_scalar();
}

bool finite3(const double* v) {
    return std::isfinite(v[0]) && std::isfinite(v[1]) && std::isfinite(v[2]);
}

/// Cartesian point of grid index (i, j, k).
Vec3 point(const EnergyInput& in, double i, double j, double k) {
    Vec3 p;
    for (int d = 0; d < 3; ++d)
        p[d] = in.origin[d] + i * in.steps[0][d] + j * in.steps[1][d] + k * in.steps[2][d];
    return p;
}

/// Bounding box of the grid points with index in [i0, i1) x [j0, j1) x [k0, k1).
void bounds(const EnergyInput& in, const int lo_idx[3], const int hi_idx[3], Vec3& lo, Vec3& hi) {
    lo = {HUGE_VAL, HUGE_VAL, HUGE_VAL};
    hi = {-HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
    for (int c = 0; c < 8; ++c) {
        const Vec3 p =
            point(in, (c & 1) ? hi_idx[0] - 1 : lo_idx[0], (c & 2) ? hi_idx[1] - 1 : lo_idx[1],
                  (c & 4) ? hi_idx[2] - 1 : lo_idx[2]);
        for (int d = 0; d < 3; ++d) {
            lo[d] = std::min(lo[d], p[d]);
            hi[d] = std::max(hi[d], p[d]);
        }
    }
}

/// Inverse of the 3x3 matrix m (rows); false when it is (numerically) singular.
bool invert3(const double* m, double* inv) {
    const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                       m[2] * (m[3] * m[7] - m[4] * m[6]);
    double len = 1.0;
    for (int r = 0; r < 3; ++r)
        len *= std::sqrt(m[3 * r] * m[3 * r] + m[3 * r + 1] * m[3 * r + 1] +
                         m[3 * r + 2] * m[3 * r + 2]);
    if (!(len > 0) || !std::isfinite(det) || !(std::fabs(det) > 1e-9 * len)) return false;
    inv[0] = (m[4] * m[8] - m[5] * m[7]) / det;
    inv[1] = (m[2] * m[7] - m[1] * m[8]) / det;
    inv[2] = (m[1] * m[5] - m[2] * m[4]) / det;
    inv[3] = (m[5] * m[6] - m[3] * m[8]) / det;
    inv[4] = (m[0] * m[8] - m[2] * m[6]) / det;
    inv[5] = (m[2] * m[3] - m[0] * m[5]) / det;
    inv[6] = (m[3] * m[7] - m[4] * m[6]) / det;
    inv[7] = (m[1] * m[6] - m[0] * m[7]) / det;
    inv[8] = (m[0] * m[4] - m[1] * m[3]) / det;
    return true;
}

/// The atom images within the cutoff of the grid's bounding box, sorted into a cell list.
struct Images {
    std::vector<double> x, y, z, sig2, eps4;  // sorted by bin
    std::vector<std::int64_t> start;          // bin b holds [start[b], start[b+1])
    Vec3 lo{};                                // corner of bin (0, 0, 0)
    double h = 1.0;                           // bin edge, Angstrom
    int nb[3] = {1, 1, 1};

    std::int64_t bin_of(double v, int d) const {
        const double f = std::floor((v - lo[d]) / h);
        return static_cast<std::int64_t>(std::clamp(f, 0.0, static_cast<double>(nb[d] - 1)));
    }
};

/// Fractional ranges of the lattice translations that can bring atom f (fractional) into
/// [flo, fhi]; the product of their sizes (as a double: it may be huge).
double translation_ranges(const double* f, const Vec3& flo, const Vec3& fhi, long long n0[3],
                          long long n1[3]) {
    double count = 1.0;
    for (int d = 0; d < 3; ++d) {
        const double a = std::ceil(flo[d] - f[d]), b = std::floor(fhi[d] - f[d]);
        if (b < a) return 0.0;
        count *= b - a + 1.0;
        if (count > 4.0 * static_cast<double>(kMaxLjImages)) return count;
        n0[d] = static_cast<long long>(a);
        n1[d] = static_cast<long long>(b);
    }
    return count;
}

Images build_images(const EnergyInput& in) {
    const int zero[3] = {0, 0, 0};
    Vec3 plo, phi;
    bounds(in, zero, in.shape, plo, phi);
    Vec3 elo, ehi;  // every image that matters lies in here
    for (int d = 0; d < 3; ++d) {
        elo[d] = plo[d] - in.cutoff;
        ehi[d] = phi[d] + in.cutoff;
    }
    auto inside = [&](double x, double y, double z) {
        return x >= elo[0] && x <= ehi[0] && y >= elo[1] && y <= ehi[1] && z >= elo[2] &&
               z <= ehi[2];
    };
    std::vector<double> x, y, z, s2, e4;
    auto push = [&](double px, double py, double pz, std::int64_t a) {
        x.push_back(px);
        y.push_back(py);
        z.push_back(pz);
        s2.push_back(in.sigmas[a] * in.sigmas[a]);
        e4.push_back(4.0 * in.epsilons[a]);
    };
    if (!in.lattice) {
        for (std::int64_t a = 0; a < in.n_atoms; ++a) {
            const double* r = in.positions + 3 * a;
            if (inside(r[0], r[1], r[2])) push(r[0], r[1], r[2], a);
        }
    } else {
        const double* L = in.lattice;
        double inv[9];
        invert3(L, inv);  // validated
        Vec3 flo = {HUGE_VAL, HUGE_VAL, HUGE_VAL}, fhi = {-HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
        for (int c = 0; c < 8; ++c) {
            const double v[3] = {(c & 1) ? ehi[0] : elo[0], (c & 2) ? ehi[1] : elo[1],
                                 (c & 4) ? ehi[2] : elo[2]};
            for (int d = 0; d < 3; ++d) {
                const double f = v[0] * inv[d] + v[1] * inv[3 + d] + v[2] * inv[6 + d];
                flo[d] = std::min(flo[d], f);
                fhi[d] = std::max(fhi[d], f);
            }
        }
        std::vector<double> frac(3 * static_cast<std::size_t>(in.n_atoms));
        double total = 0.0;
        long long n0[3], n1[3];
        for (std::int64_t a = 0; a < in.n_atoms; ++a) {
            const double* r = in.positions + 3 * a;
            double* f = frac.data() + 3 * a;
            for (int d = 0; d < 3; ++d)
                f[d] = r[0] * inv[d] + r[1] * inv[3 + d] + r[2] * inv[6 + d];
            total += translation_ranges(f, flo, fhi, n0, n1);
            if (total > 4.0 * static_cast<double>(kMaxLjImages))
                fail("the cell is too small (or too skewed) for the cutoff of ", in.cutoff,
                     " Angstrom over this grid: more than ", 4 * kMaxLjImages,
                     " lattice translations to try");
        }
        for (std::int64_t a = 0; a < in.n_atoms; ++a) {
            const double* r = in.positions + 3 * a;
            if (translation_ranges(frac.data() + 3 * a, flo, fhi, n0, n1) == 0.0) continue;
            for (long long u = n0[0]; u <= n1[0]; ++u)
                for (long long v = n0[1]; v <= n1[1]; ++v)
                    for (long long w = n0[2]; w <= n1[2]; ++w) {
                        const double du = static_cast<double>(u), dv = static_cast<double>(v),
                                     dw = static_cast<double>(w);
                        const double px = r[0] + du * L[0] + dv * L[3] + dw * L[6];
                        const double py = r[1] + du * L[1] + dv * L[4] + dw * L[7];
                        const double pz = r[2] + du * L[2] + dv * L[5] + dw * L[8];
                        if (!inside(px, py, pz)) continue;
                        if (static_cast<std::int64_t>(x.size()) >= kMaxLjImages)
                            fail("more than ", kMaxLjImages,
                                 " atom images lie within the cutoff of the grid: the cell is "
                                 "too small for a cutoff of ",
                                 in.cutoff, " Angstrom");
                        push(px, py, pz, a);
                    }
        }
    }
    // The cell list: bins of about half the cutoff, fewer when they would outnumber the
    // images by far.
    Images im;
    im.lo = elo;
    const auto n = static_cast<std::int64_t>(x.size());
    const double max_bins = std::max(8.0 * static_cast<double>(n), 4096.0);
    im.h = in.cutoff / 2.0;
    for (;;) {
        double total = 1.0;
        for (int d = 0; d < 3; ++d) total *= std::max(1.0, std::ceil((ehi[d] - elo[d]) / im.h));
        if (total <= max_bins) break;
        im.h *= 1.5;
    }
    for (int d = 0; d < 3; ++d)
        im.nb[d] = static_cast<int>(std::max(1.0, std::ceil((ehi[d] - elo[d]) / im.h)));
    const std::int64_t nbins = std::int64_t{im.nb[0]} * im.nb[1] * im.nb[2];
    std::vector<std::int64_t> bin(n);
    im.start.assign(nbins + 1, 0);
    for (std::int64_t i = 0; i < n; ++i) {
        bin[i] =
            (im.bin_of(x[i], 0) * im.nb[1] + im.bin_of(y[i], 1)) * im.nb[2] + im.bin_of(z[i], 2);
        ++im.start[bin[i] + 1];
    }
    for (std::int64_t b = 0; b < nbins; ++b) im.start[b + 1] += im.start[b];
    std::vector<std::int64_t> fill(im.start.begin(), im.start.end() - 1);
    for (auto* v : {&im.x, &im.y, &im.z, &im.sig2, &im.eps4}) v->resize(n);
    for (std::int64_t i = 0; i < n; ++i) {  // stable: images keep their order within a bin
        const std::int64_t j = fill[bin[i]]++;
        im.x[j] = x[i];
        im.y[j] = y[i];
        im.z[j] = z[i];
        im.sig2[j] = s2[i];
        im.eps4[j] = e4[i];
    }
    return im;
}

/// Per-worker scratch: candidates (5 arrays) and the points of one tile.
struct Scratch {
    std::vector<double> cx, cy, cz, cs, ce, pts, e;
};

}  // namespace
}  // namespace detail

void validate_energy(const EnergyInput& in) {
    using detail::fail;
    if (in.n_atoms < 0 || in.n_atoms > (std::int64_t{1} << 40))
        fail("n_atoms must be between 0 and 2^40, got ", in.n_atoms);
    if (in.n_atoms > 0 && (!in.positions || !in.sigmas || !in.epsilons))
        fail("positions, sigmas and epsilons are required");
    for (std::int64_t a = 0; a < in.n_atoms; ++a) {
        const double* r = in.positions + 3 * a;
        for (int d = 0; d < 3; ++d)
            if (!(std::fabs(r[d]) <= kMaxLjDistance))
                fail("positions[", a, "] must be finite and within ", kMaxLjDistance,
                     " Angstrom of the origin, got ", r[d]);
        if (!(in.sigmas[a] > 0 && in.sigmas[a] <= kMaxLjSigma))
            fail("sigmas[", a, "] must be a positive length of at most ", kMaxLjSigma,
                 " Angstrom, got ", in.sigmas[a]);
        if (!(in.epsilons[a] >= 0 && in.epsilons[a] <= kMaxLjEpsilon))
            fail("epsilons[", a, "] must be a well depth in [0, ", kMaxLjEpsilon, "] K, got ",
                 in.epsilons[a]);
    }
    if (!(in.cutoff > 0 && in.cutoff <= kMaxLjCutoff))
        fail("cutoff must be a positive length of at most ", kMaxLjCutoff, " Angstrom, got ",
             in.cutoff);
    if (!(std::fabs(in.max_energy) <= kMaxLjClip))
        fail("max_energy must be finite and at most ", kMaxLjClip, " K in magnitude, got ",
             in.max_energy);
    const std::int64_t shape[3] = {in.shape[0], in.shape[1], in.shape[2]};
    check_grid_shape(1, 1, shape, "out");
    if (!detail::finite3(in.origin) || !detail::finite3(in.steps[0]) ||
        !detail::finite3(in.steps[1]) || !detail::finite3(in.steps[2]))
        fail("the grid origin and steps must be finite");
    const int zero[3] = {0, 0, 0};
    detail::Vec3 lo, hi;
    detail::bounds(in, zero, in.shape, lo, hi);
    for (int d = 0; d < 3; ++d)
        if (!(std::fabs(lo[d]) <= kMaxLjDistance && std::fabs(hi[d]) <= kMaxLjDistance))
            fail("the grid points must lie within ", kMaxLjDistance, " Angstrom of the origin");
    if (in.lattice) {
        for (int i = 0; i < 9; ++i)
            if (!(std::fabs(in.lattice[i]) <= kMaxLjDistance))
                fail("lattice must be finite (within ", kMaxLjDistance, " Angstrom)");
        double inv[9];
        if (!detail::invert3(in.lattice, inv))
            fail("lattice is degenerate (a zero-length or coplanar cell vector)");
    }
}

void lj_energy_grid(const EnergyInput& in, float* out, const Options& opt) {
    validate_energy(in);
    const detail::EnergyKernels& k = detail::energy_kernels_for(opt.isa);
    const detail::Images im = detail::build_images(in);
    const double rc = in.cutoff, rc2 = rc * rc;
    // Tiles of points about a quarter of the cutoff across (at most 8 per axis).
    int t[3], nt[3];
    for (int d = 0; d < 3; ++d) {
        const double len =
            std::sqrt(in.steps[d][0] * in.steps[d][0] + in.steps[d][1] * in.steps[d][1] +
                      in.steps[d][2] * in.steps[d][2]);
        const double want = len > 0 ? std::floor(rc / 4.0 / len) : 8.0;
        t[d] = static_cast<int>(std::clamp(want, 1.0, 8.0));
        t[d] = std::min(t[d], in.shape[d]);
        nt[d] = (in.shape[d] + t[d] - 1) / t[d];
    }
    const std::int64_t n_tiles = std::int64_t{nt[0]} * nt[1] * nt[2];
    const int workers = detail::resolve_threads(opt.threads);
    std::vector<detail::Scratch> scratch(static_cast<std::size_t>(workers));
    const std::int64_t ny = in.shape[1], nz = in.shape[2];
    detail::parallel_for(n_tiles, workers, [&](std::int64_t tile, int worker) {
        detail::Scratch& s = scratch[static_cast<std::size_t>(worker)];
        const int ti = static_cast<int>(tile / (std::int64_t{nt[1]} * nt[2]));
        const int tj = static_cast<int>((tile / nt[2]) % nt[1]);
        const int tk = static_cast<int>(tile % nt[2]);
        const int lo_idx[3] = {ti * t[0], tj * t[1], tk * t[2]};
        const int hi_idx[3] = {std::min(lo_idx[0] + t[0], in.shape[0]),
                               std::min(lo_idx[1] + t[1], in.shape[1]),
                               std::min(lo_idx[2] + t[2], in.shape[2])};
        detail::Vec3 lo, hi;
        detail::bounds(in, lo_idx, hi_idx, lo, hi);
        // Gather the images within the cutoff of the tile's bounding box.
        s.cx.clear();
        s.cy.clear();
        s.cz.clear();
        s.cs.clear();
        s.ce.clear();
        std::int64_t b0[3], b1[3];
        for (int d = 0; d < 3; ++d) {
            b0[d] = im.bin_of(lo[d] - rc, d);
            b1[d] = im.bin_of(hi[d] + rc, d);
        }
        for (std::int64_t bx = b0[0]; bx <= b1[0]; ++bx)
            for (std::int64_t by = b0[1]; by <= b1[1]; ++by) {
                const std::int64_t row = (bx * im.nb[1] + by) * im.nb[2];
                for (std::int64_t i = im.start[row + b0[2]]; i < im.start[row + b1[2] + 1]; ++i) {
                    const double dx = std::max({0.0, lo[0] - im.x[i], im.x[i] - hi[0]});
                    const double dy = std::max({0.0, lo[1] - im.y[i], im.y[i] - hi[1]});
                    const double dz = std::max({0.0, lo[2] - im.z[i], im.z[i] - hi[2]});
                    if (dx * dx + dy * dy + dz * dz > rc2) continue;
                    s.cx.push_back(im.x[i]);
                    s.cy.push_back(im.y[i]);
                    s.cz.push_back(im.z[i]);
                    s.cs.push_back(im.sig2[i]);
                    s.ce.push_back(im.eps4[i]);
                }
            }
        // Pad with images far beyond any cutoff that contribute exactly zero.
        while (s.cx.size() % detail::kLjPad) {
            s.cx.push_back(1e30);
            s.cy.push_back(1e30);
            s.cz.push_back(1e30);
            s.cs.push_back(0.0);
            s.ce.push_back(0.0);
        }
        const int n_points =
            (hi_idx[0] - lo_idx[0]) * (hi_idx[1] - lo_idx[1]) * (hi_idx[2] - lo_idx[2]);
        s.pts.resize(3 * static_cast<std::size_t>(n_points));
        s.e.resize(static_cast<std::size_t>(n_points));
        int p = 0;
        for (int i = lo_idx[0]; i < hi_idx[0]; ++i)
            for (int j = lo_idx[1]; j < hi_idx[1]; ++j)
                for (int kk = lo_idx[2]; kk < hi_idx[2]; ++kk, ++p) {
                    const detail::Vec3 q = detail::point(in, i, j, kk);
                    s.pts[3 * p] = q[0];
                    s.pts[3 * p + 1] = q[1];
                    s.pts[3 * p + 2] = q[2];
                }
        const detail::LjCandidates c{s.cx.data(), s.cy.data(),
                                     s.cz.data(), s.cs.data(),
                                     s.ce.data(), static_cast<std::int64_t>(s.cx.size())};
        if (c.n > 0) {
            k.lj_points(c, s.pts.data(), n_points, rc2, s.e.data());
        } else {
            std::fill(s.e.begin(), s.e.end(), 0.0);
        }
        p = 0;
        for (int i = lo_idx[0]; i < hi_idx[0]; ++i)
            for (int j = lo_idx[1]; j < hi_idx[1]; ++j)
                for (int kk = lo_idx[2]; kk < hi_idx[2]; ++kk, ++p)
                    out[(i * ny + j) * nz + kk] = static_cast<float>(
                        std::min(s.e[static_cast<std::size_t>(p)], in.max_energy));
    });
}

}  // namespace pgrid
