// Which dtype the CPU kernels run their matrix products in.
//
// float and double run as they are. For bfloat16 and float16 features the
// products run in the 16-bit dtype itself wherever the CPU has instructions
// for it (avx512_bf16 or amx_bf16; avx512_fp16 or amx_fp16): ATen's GEMMs
// (oneDNN) then use them and sum in float32, as eager PyTorch does under
// autocast, at two to three times the float32 rate. Elsewhere the operands
// are widened to float32, tile by tile. Either way the kernels keep their own
// sums across tiles, chunks and images in float32.
//
// CONDNET_CPU_PRODUCTS=float32 keeps the float32 products on any CPU;
// CONDNET_CPU_PRODUCTS=16bit runs the 16-bit ones on any CPU (where it has no
// instructions for them they are emulated, slowly: it is there so the tests
// reach the 16-bit path everywhere); unset or "auto" chooses as above. It is
// read on every call, so it can be changed at run time.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cpu/Utils.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "../kernel_host.h"

namespace condnet::cpu {

namespace detail {

inline bool cpu_has(const char* feature) {
  const auto caps = at::cpu::get_cpu_capabilities();
  const auto it = caps.find(feature);
  return it != caps.end() && it->second.isBool() && it->second.toBool();
}

inline bool native_16bit_products(at::ScalarType dtype) {
  static const bool bf16 = cpu_has("avx512_bf16") || cpu_has("amx_bf16");
  static const bool fp16 = cpu_has("avx512_fp16") || cpu_has("amx_fp16");
  return dtype == at::kBFloat16 ? bf16 : dtype == at::kHalf ? fp16 : false;
}

enum class ProductSetting { kAuto, kFloat32, k16Bit };

inline ProductSetting product_setting() {
  const char* value = std::getenv("CONDNET_CPU_PRODUCTS");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) {
    return ProductSetting::kAuto;
  }
  if (std::strcmp(value, "float32") == 0) return ProductSetting::kFloat32;
  TORCH_CHECK_VALUE(std::strcmp(value, "16bit") == 0,
                    "the environment variable CONDNET_CPU_PRODUCTS must be 'auto', 'float32' or "
                    "'16bit', got '",
                    value, "'");
  return ProductSetting::k16Bit;
}

}  // namespace detail

// The dtype of the operands of the matrix products for features of `dtype`.
inline at::ScalarType product_type(at::ScalarType dtype) {
  if (dtype != at::kBFloat16 && dtype != at::kHalf) return dtype;
  switch (detail::product_setting()) {
    case detail::ProductSetting::kFloat32: return acc_type(dtype);
    case detail::ProductSetting::k16Bit: return dtype;
    case detail::ProductSetting::kAuto: break;
  }
  return detail::native_16bit_products(dtype) ? dtype : acc_type(dtype);
}

}  // namespace condnet::cpu
