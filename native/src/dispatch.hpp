// Run-time choice of the instruction-set path: CPUID (with the OS's XSAVE state) decides
// which of the per-ISA tables (kernels.hpp, codec_kernels.hpp) may be used.
#pragma once

#include "codec_kernels.hpp"
#include "kernels.hpp"
#include "pgrid/grid.hpp"

namespace pgrid::detail {

/// Whether this CPU and OS can run `isa`.
bool cpu_has(Isa isa);

/// The density kernels of `isa`; throws std::invalid_argument if the CPU lacks it.
const IsaKernels& kernels_for(Isa isa);

/// The codec passes of `isa`; throws std::invalid_argument if the CPU lacks it.
const CodecKernels& codec_kernels_for(Isa isa);

}  // namespace pgrid::detail
