// pgrid shard codec helpers: the controlled rounding of stored grids and HDF5's byte
// shuffle, in native code because they touch every byte of every grid written.
// Pure C++; no Python, no file I/O. The policy (which step, why) is pgrid_cli/codec.py's.
#pragma once

#include <cstdint>

#include "pgrid/grid.hpp"

namespace pgrid {

/// Round a grid of `rows` channels x `voxels` values in place to multiples of
/// `step` = min(max_step, 2^floor(log2(relative * max value))) (a power of two; max_step
/// when the grid has no positive value): every value moves to its nearest multiple, then
/// each channel's total is restored: |deficit| more values whose rounding residual points
/// towards the deficit move one step (the strongest residuals first, in tiers of 0.05,
/// lowest index first within a tier), so each value changes by less than one step and
/// each channel sum by at most half a step. All-zero channels are left alone; -0 becomes
/// +0. Deterministic. Returns the step used. Throws std::invalid_argument, before writing
/// anything, if the grid holds an inf or NaN, if max_step or relative is not a positive
/// finite number, or if the step cannot be used in float32 (outside float32's normal range,
/// or values more than FLT_MAX/2 steps large).
double round_grid(float* grid, std::int64_t rows, std::int64_t voxels, double max_step,
                  double relative, Isa isa);

/// nonzero[r] = whether row r of a rows x voxels array holds a non-zero value.
void nonzero_rows(const float* data, std::int64_t rows, std::int64_t voxels, bool* nonzero,
                  Isa isa);

/// HDF5's shuffle filter for 4-byte elements: out[k*n + i] = byte k of element i.
void shuffle4(const float* in, std::int64_t n, std::uint8_t* out, Isa isa);

/// Inverse of shuffle4: out[i] = the element whose byte k is in[k*n + i].
void unshuffle4(const std::uint8_t* in, std::int64_t n, float* out, Isa isa);

}  // namespace pgrid
