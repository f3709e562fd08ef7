// The per-ISA passes of the shard codec (codec_impl.hpp, compiled in the same per-ISA
// translation units as the density kernels); codec.cpp holds the common logic and
// dispatch.hpp picks one table.
#pragma once

#include <cstdint>

namespace pgrid::detail {

struct CodecKernels {
    const char* name;

    /// row[i] <- rint(row[i] * inv_step), residual[i] <- the rounding residual (in steps);
    /// returns the sum of the residuals.
    double (*round_row)(float* row, std::int64_t n, float inv_step, float* residual);
    /// row[i] <- row[i] * step + 0 (-0 becomes +0).
    void (*scale_row)(float* row, std::int64_t n, float step);
    /// Largest |value| and largest value of a row, and whether all its values are finite.
    void (*row_extent)(const float* row, std::int64_t n, float* max_abs, float* max_val,
                       bool* finite);
    /// HDF5's shuffle filter for 4-byte elements (see pgrid/codec.hpp).
    void (*shuffle4)(const float* in, std::int64_t n, std::uint8_t* out);
    /// Indices i (ascending) with lo < sign*residual[i] <= hi, at most `need`; returns how many.
    std::int64_t (*pick_in_tier)(const float* residual, std::int64_t n, float sign, float lo,
                                 float hi, std::int64_t need, std::int64_t* out);
    /// Inverse of shuffle4.
    void (*unshuffle4)(const std::uint8_t* in, std::int64_t n, float* out);
};

const CodecKernels& codec_kernels_scalar();
const CodecKernels& codec_kernels_avx2();
const CodecKernels& codec_kernels_avx512();

}  // namespace pgrid::detail

/// Defines pgrid::detail::codec_kernels_<ns>() from the functions compiled in pgrid::<ns>,
/// in the order of CodecKernels' members; expanded outside any target region.
#define PGRID_CODEC_TABLE(ns)                                  \
    namespace pgrid::detail {                                  \
    const CodecKernels& codec_kernels_##ns() {                 \
        static const CodecKernels k{#ns,                       \
                                    ::pgrid::ns::round_row,    \
                                    ::pgrid::ns::scale_row,    \
                                    ::pgrid::ns::row_extent,   \
                                    ::pgrid::ns::shuffle4,     \
                                    ::pgrid::ns::pick_in_tier, \
                                    ::pgrid::ns::unshuffle4};  \
        return k;                                              \
    }                                                          \
    }
