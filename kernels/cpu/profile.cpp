#include "cpu/profile.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#if defined(__x86_64__) || defined(_M_X64)
#include <x86intrin.h>
#endif

namespace rvqfast {
namespace cpu {
namespace {

const char* const kNames[] = {"prep", "gemm", "epilogue", "screen", "narrow+rerank", "finish",
                              "serial"};

struct Totals {
  std::atomic<uint64_t> cyc[static_cast<int>(Phase::kCount)] = {};
  uint64_t ns0 = 0, tsc0 = 0;
  Totals() {
    ns0 = now_ns();
    tsc0 = profile_now();
  }
  static uint64_t now_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
  }
  ~Totals() {
    // Cycles -> ms with the TSC rate measured over the process lifetime.
    const double ns = static_cast<double>(now_ns() - ns0),
                 tsc = static_cast<double>(profile_now() - tsc0);
    const double ms_per_cyc = tsc > 0 ? ns / tsc / 1e6 : 0;
    std::fprintf(stderr, "rvqfast profile (ms, thread sums for per-row phases):\n");
    for (int i = 0; i < static_cast<int>(Phase::kCount); ++i)
      std::fprintf(stderr, "  %-14s %10.2f\n", kNames[i], static_cast<double>(cyc[i].load()) * ms_per_cyc);
  }
};

Totals* totals() {
  static Totals* t = profile_on() ? new Totals() : nullptr;
  return t;
}

struct Printer {
  ~Printer() { delete totals(); }
} g_printer;

}  // namespace

bool profile_on() {
  static const bool on = [] {
    const char* e = std::getenv("RVQFAST_PROFILE");
    return e && e[0] == '1';
  }();
  return on;
}

uint64_t profile_now() {
#if defined(__x86_64__) || defined(_M_X64)
  return __rdtsc();
#else
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

void profile_add(Phase ph, uint64_t cycles) {
  if (Totals* t = totals()) t->cyc[static_cast<int>(ph)] += cycles;
}

}  // namespace cpu
}  // namespace rvqfast
