// The CPU as the shared host code (host/*_host.h) sees it: no device to
// select, and large outputs backed by huge pages where the kernel allows
// (output_memory.h). The CPU kernels derive their Kernels types from it.
#pragma once

#include <ATen/ATen.h>

#include "output_memory.h"

namespace condnet::cpu {

struct Device {
  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };

  static at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return cpu::empty_output(sizes, options);
  }
};

}  // namespace condnet::cpu
