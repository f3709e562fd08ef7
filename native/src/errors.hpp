// One way to report bad input from the core: std::invalid_argument with a message built
// from parts (the bindings turn it into a Python ValueError).
#pragma once

#include <sstream>
#include <stdexcept>

namespace pgrid::detail {

template <class... Args>
[[noreturn]] void fail(Args&&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    throw std::invalid_argument(os.str());
}

}  // namespace pgrid::detail
