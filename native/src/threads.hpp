// The kernel's threading: parallel_for over independent work items. Each item writes its
// own output, so results never depend on the number of threads or on the split.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace pgrid::detail {

/// `threads` if positive, else every hardware thread.
int resolve_threads(int threads);

/// Run body(context, item, worker) for item in [0, n) on up to `threads` threads (worker
/// 0 is the calling thread). Items are handed out one at a time in increasing order; the
/// first exception thrown by any item stops the rest and is rethrown here.
void run_parallel(std::int64_t n, int threads, void (*body)(void*, std::int64_t, int),
                  void* context);

/// Run f(item, worker) for item in [0, n) on up to `threads` threads (see run_parallel).
template <class F>
void parallel_for(std::int64_t n, int threads, F&& f) {
    using Fn = std::remove_reference_t<F>;
    run_parallel(
        n, threads,
        [](void* ctx, std::int64_t item, int worker) { (*static_cast<Fn*>(ctx))(item, worker); },
        const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace pgrid::detail
