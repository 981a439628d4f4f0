// Element conversions between float and the storage dtypes that GCC
// vectorises inside `omp simd` loops. c10::BFloat16's own conversions go
// through a temporary object and a NaN branch, which keeps those loops
// scalar; here bfloat16 is handled as its bits (round to nearest even, NaN
// kept as the quiet NaN 0x7FC0, as c10 does). Other dtypes convert as
// static_cast does.
#pragma once

#include <c10/util/BFloat16.h>

#include <bit>
#include <cstdint>

#include "vector_loops.h"

namespace condnet::cpu {

template <class Acc, class T>
CONDNET_INLINE Acc load_as(const T* p, int64_t i) {
  return static_cast<Acc>(p[i]);
}

template <>
CONDNET_INLINE float load_as<float, c10::BFloat16>(const c10::BFloat16* p, int64_t i) {
  const uint16_t bits = reinterpret_cast<const uint16_t*>(p)[i];
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

template <class T, class Acc>
CONDNET_INLINE void store_as(T* p, int64_t i, Acc v) {
  p[i] = static_cast<T>(v);
}

template <>
CONDNET_INLINE void store_as<c10::BFloat16, float>(c10::BFloat16* p, int64_t i, float v) {
  const uint32_t u = std::bit_cast<uint32_t>(v);
  const uint32_t nan = 0u - static_cast<uint32_t>((u & 0x7FFFFFFFu) > 0x7F800000u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>((rounded & ~nan) | (0x7FC0u & nan));
}

}  // namespace condnet::cpu
