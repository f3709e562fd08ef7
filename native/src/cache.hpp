// The size of the last-level cache: the output size above which streaming stores pay off.
#pragma once

#include <cstddef>

namespace pgrid::detail {

/// Bytes of the last-level cache one core sees (probed once; 32 MiB if unknown).
std::size_t llc_bytes();

}  // namespace pgrid::detail
