// The per-ISA density kernels. kernel_impl.hpp is compiled three times (scalar, AVX2,
// AVX-512), each copy in its own namespace and target region; dispatch.hpp picks one
// table. The shard codec's passes have a table of their own (codec_kernels.hpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "plan.hpp"

namespace pgrid::detail {

struct IsaKernels {
    const char* name;
    int float_width;  ///< floats per vector: z factors are padded to this

    /// cdf[m] = Phi(t[m]) and, when pdf is non-null, pdf[m] = phi(t[m]) (standard normal).
    void (*normal_cdf)(const double* t, std::size_t n, double* cdf, double* pdf);

    /// Write planes i in [i_begin, i_end) of channel c into out_c (nx, ny, nz). Each
    /// output vector is accumulated in registers and stored once; with stream, a plane
    /// goes through `plane` (ny*nz floats, 64-byte aligned) and out with non-temporal
    /// stores. active: room for the channel's atoms.
    void (*render_ortho)(const OrthoPlan& p, int c, int i_begin, int i_end, float* out_c,
                         float* plane, detail::ActiveAtom* active, bool stream);

    /// dlocal[4*a + d] = dL/dp_d (frame axis d), dlocal[4*a + 3] = dL/dw for plan atoms
    /// a in [a_begin, a_end); dgrid is the structure's (C, nx, ny, nz) upstream gradient.
    void (*grad_ortho)(const OrthoPlan& p, int a_begin, int a_end, const float* dgrid,
                       double* dlocal);

    /// As render_ortho for triclinic boxes. plane: zeroed scratch of ny*nz floats,
    /// returned zeroed; work: 2*(max_row + 2*width) + 4*(q*q + width) floats.
    void (*render_tric)(const TricPlan& p, int c, int i_begin, int i_end, float* out_c,
                        float* plane, float* work, bool stream);

    /// As grad_ortho for triclinic boxes (frame axes e1, e2, e3); work as render_tric.
    void (*grad_tric)(const TricPlan& p, int a_begin, int a_end, const float* dgrid, double* dlocal,
                      float* work);

    /// Zero n floats (streaming stores when asked).
    void (*zero)(float* dst, std::size_t n, bool stream);
};

const IsaKernels& kernels_scalar();
const IsaKernels& kernels_avx2();
const IsaKernels& kernels_avx512();

}  // namespace pgrid::detail

/// Defines pgrid::detail::kernels_<ns>() from the functions compiled in pgrid::<ns>, in the
/// order of IsaKernels' members (a member left out would be null: tests call every one).
/// Expanded outside any target region so that building the table is baseline code.
#define PGRID_KERNEL_TABLE(ns)                               \
    namespace pgrid::detail {                                \
    const IsaKernels& kernels_##ns() {                       \
        static const IsaKernels k{#ns,                       \
                                  ::pgrid::ns::kFloatWidth,  \
                                  ::pgrid::ns::normal_cdf,   \
                                  ::pgrid::ns::render_ortho, \
                                  ::pgrid::ns::grad_ortho,   \
                                  ::pgrid::ns::render_tric,  \
                                  ::pgrid::ns::grad_tric,    \
                                  ::pgrid::ns::zero};        \
        return k;                                            \
    }                                                        \
    }
