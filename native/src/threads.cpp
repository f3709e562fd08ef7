// Threads for the kernel: one persistent pool of workers, created on first use and grown on
// demand, that run the items of one parallel_for at a time from an atomic counter (see
// threads.hpp). A call that finds the pool busy (another Python thread in the kernel at the
// same time) starts its own threads, as every call used to. After fork() the child leaves
// the parent's pool behind (its threads do not exist there) and builds a new one.
#include "threads.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
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
namespace {

/// One parallel_for: its items, body and first error.
struct Job {
    std::int64_t n = 0;
    void (*body)(void*, std::int64_t, int) = nullptr;
    void* context = nullptr;
    std::atomic<std::int64_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;

    /// Take items until none are left; record the first exception and stop the others.
    void work(int tid) {
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
    }
};

/// Fresh threads for this call only (the pool is busy).
void run_spawned(Job& job, int nt) {
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    for (int t = 1; t < nt; ++t) pool.emplace_back([&job, t] { job.work(t); });
    job.work(0);
    for (auto& t : pool) t.join();
}

/// The persistent workers. Worker w runs as thread id w + 1 (the caller is 0). Never
/// destroyed: at exit its threads sleep in wait() and end with the process.
class Pool {
  public:
    explicit Pool(pid_t owner) : pid(owner) {}
    const pid_t pid;  // the process whose threads these are

    /// Run `job` on up to `nt` threads (the caller and nt - 1 workers); false if the pool
    /// is busy with another call (the caller then runs the job some other way). Workers
    /// join while the job is open; once the caller has run out of items it closes the
    /// job and waits only for the workers still inside it, so a worker that wakes late
    /// (a busy machine) costs nothing.
    bool run(Job& job, int nt) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        {
            std::lock_guard<std::mutex> lock(m_);
            while (static_cast<int>(workers_.size()) < nt - 1) {
                const int tid = static_cast<int>(workers_.size()) + 1;
                workers_.emplace_back([this, tid] { loop(tid); });
                workers_.back().detach();
            }
            job_ = &job;
            job_threads_ = nt;
            ++generation_;
        }
        start_.notify_all();
        job.work(0);
        std::unique_lock<std::mutex> lock(m_);
        job_ = nullptr;
        done_.wait(lock, [this] { return running_ == 0; });
        return true;
    }

  private:
    void loop(int tid) {
        std::uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            start_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            if (!job_ || tid >= job_threads_) continue;  // closed already, or not needed
            Job* job = job_;
            ++running_;
            lock.unlock();
            job->work(tid);
            lock.lock();
            if (--running_ == 0) done_.notify_one();
        }
    }

    std::mutex busy_;  // held by the call using the pool
    std::mutex m_;     // guards everything below
    std::condition_variable start_, done_;
    std::vector<std::thread> workers_;
    std::uint64_t generation_ = 0;
    Job* job_ = nullptr;
    int job_threads_ = 0;
    int running_ = 0;  // workers inside the open or closing job
};

std::atomic<Pool*> g_pool{nullptr};

/// In the child of fork(): forget the parent's pool (leaked on purpose: its threads and
/// possibly held mutexes belong to the parent).
void forget_pool_after_fork() { g_pool.store(nullptr); }

Pool& pool() {
    const pid_t pid = getpid();
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (p && p->pid == pid) return *p;
    static std::once_flag atfork_once;
    std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, forget_pool_after_fork); });
    if (p) {
        // A child that missed the atfork handler (e.g. a raw clone): start over.
        g_pool.compare_exchange_strong(p, nullptr);
    }
    auto* fresh = new Pool(pid);
    Pool* expected = nullptr;
    if (g_pool.compare_exchange_strong(expected, fresh)) return *fresh;
    delete fresh;  // another thread installed one first
    if (expected->pid == pid) return *expected;
    return pool();
}

}  // namespace

int resolve_threads(int threads) { return threads > 0 ? threads : hardware_threads(); }

void run_parallel(std::int64_t n, int threads, void (*body)(void*, std::int64_t, int),
                  void* context) {
    if (n <= 0) return;
    const int nt = static_cast<int>(std::min<std::int64_t>(threads, n));
    if (nt <= 1) {
        for (std::int64_t i = 0; i < n; ++i) body(context, i, 0);
        return;
    }
    Job job;
    job.n = n;
    job.body = body;
    job.context = context;
    if (!pool().run(job, nt)) run_spawned(job, nt);
    if (job.error) std::rethrow_exception(job.error);
}

}  // namespace detail
}  // namespace pgrid
