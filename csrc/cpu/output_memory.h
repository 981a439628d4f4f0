// Fresh outputs of the CPU kernels.
//
// A multi-megabyte tensor comes from a fresh mmap on every call (glibc maps
// blocks above 32 MiB itself and unmaps them on free), so writing it costs a
// page fault per 4 KiB: the projection's 158 MB weight gradient took ~30 ms
// of faults on the 2-core CI machine, more than reading the weight. Asking the
// kernel to back such an output with transparent huge pages (where THP is in
// "madvise" or "always" mode) cuts that to a fault per 2 MiB. The advice
// changes nothing else: a kernel without THP ignores it. CONDNET_CPU_HUGE_PAGES=0
// turns it off (where direct compaction makes huge-page faults slow).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace condnet::cpu {

inline bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* value = std::getenv("CONDNET_CPU_HUGE_PAGES");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return wanted;
}

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!huge_pages_wanted()) return out;
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(out.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + out.nbytes()) & ~(kHuge - 1);
  if (last >= first + 2 * kHuge) {
    // Advice only: if it is refused the output is as good, just slower to fill.
    (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return out;
}

}  // namespace condnet::cpu
