// CPU dispatch: which instruction sets this machine runs, their names, and the per-ISA
// tables of kernels. Baseline x86-64 code; the tables' functions are in target regions.
#include "dispatch.hpp"

#include <string>
#include <vector>

#include "errors.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#define PGRID_X86 1
#else
#define PGRID_X86 0
#endif

namespace pgrid {
namespace detail {

bool cpu_has(Isa isa) {
    if (isa == Isa::scalar) return true;
#if PGRID_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    // libgcc / compiler-rt also check that the OS saves the wide registers (XCR0).
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == Isa::avx2) return avx2;
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

namespace {
/// The table of `isa` among one per ISA (null where not built), once CPUID allows it.
template <class Table>
const Table& table_for(Isa isa, const Table& (*scalar)(), const Table& (*avx2)(),
                       const Table& (*avx512)()) {
    if (!cpu_has(isa)) fail("instruction set ", isa_name(isa), " is not supported by this CPU");
    if (isa == Isa::avx512 && avx512) return avx512();
    if (isa == Isa::avx2 && avx2) return avx2();
    return scalar();
}

// The per-ISA tables of one kind; only x86-64 builds have the AVX2 and AVX-512 ones.
#if PGRID_X86
#define PGRID_TABLES(prefix) prefix##scalar, prefix##avx2, prefix##avx512
#else
#define PGRID_TABLES(prefix) prefix##scalar, nullptr, nullptr
#endif
}  // namespace

const IsaKernels& kernels_for(Isa isa) { return table_for(isa, PGRID_TABLES(kernels_)); }

const CodecKernels& codec_kernels_for(Isa isa) {
    return table_for(isa, PGRID_TABLES(codec_kernels_));
}

}  // namespace detail

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512:
            return "avx512";
        case Isa::avx2:
            return "avx2";
        default:
            return "scalar";
    }
}

Isa parse_isa(const std::string& name) {
    if (name == "scalar") return Isa::scalar;
    if (name == "avx2") return Isa::avx2;
    if (name == "avx512") return Isa::avx512;
    detail::fail("unknown instruction set '", name, "' (expected scalar, avx2 or avx512)");
}

std::vector<Isa> supported_isas() {
    std::vector<Isa> out{Isa::scalar};
    if (detail::cpu_has(Isa::avx2)) out.push_back(Isa::avx2);
    if (detail::cpu_has(Isa::avx512)) out.push_back(Isa::avx512);
    return out;
}

Isa best_isa() { return supported_isas().back(); }

}  // namespace pgrid
