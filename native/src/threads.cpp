// Threads for the kernel: a fresh set of std::threads per parallel_for call, handing out
// items from an atomic counter (see threads.hpp).
#include "threads.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "pgrid/grid.hpp"

namespace pgrid {

int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
}

namespace detail {

int resolve_threads(int threads) { return threads > 0 ? threads : hardware_threads(); }

void run_parallel(std::int64_t n, int threads, void (*body)(void*, std::int64_t, int),
                  void* context) {
    if (n <= 0) return;
    const int nt = static_cast<int>(std::min<std::int64_t>(threads, n));
    if (nt <= 1) {
        for (std::int64_t i = 0; i < n; ++i) body(context, i, 0);
        return;
    }
    std::atomic<std::int64_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&](int tid) {
        try {
            for (;;) {
                const std::int64_t i = next.fetch_add(1, std::memory_order_relaxed);
                if (i >= n) break;
                body(context, i, tid);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next.store(n);
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    for (int t = 1; t < nt; ++t) pool.emplace_back(worker, t);
    worker(0);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace detail
}  // namespace pgrid
