// Probing the last-level cache size (see cache.hpp).
#include "cache.hpp"

#include <cstdio>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace pgrid::detail {

/// Linux's sysfs gives the cache of cpu0's own L3 instance; sysconf can report a whole
/// host's L3 under a hypervisor (384 MB on a 32 MB VM), so it is second.
std::size_t llc_bytes() {
    static const std::size_t bytes = [] {
#if defined(__linux__)
        if (std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r")) {
            unsigned long long v = 0;
            char unit = 0;
            const int got = std::fscanf(f, "%llu%c", &v, &unit);
            std::fclose(f);
            if (got >= 1 && v > 0) {
                const unsigned long long scale = unit == 'K'   ? 1ull << 10
                                                 : unit == 'M' ? 1ull << 20
                                                               : 1;
                return static_cast<std::size_t>(v * scale);
            }
        }
#endif
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
        const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
        if (l3 > 0) return static_cast<std::size_t>(l3);
#endif
        return std::size_t(32) << 20;
    }();
    return bytes;
}

}  // namespace pgrid::detail
