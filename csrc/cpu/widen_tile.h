// acc += src for a (rows, T) tile whose product came back in a 16-bit dtype
// (products.h), summed into a float32 accumulator in one pass. ATen's
// mixed-dtype add_ first copies its 16-bit operand to a float32 temporary,
// which at C=512, K=150 in amp-bfloat16 cost a few percent of the classifier's
// forward and backward. Rows are `ld` elements apart, columns contiguous.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "convert16.h"
#include "vector_loops.h"

namespace condnet::cpu {

template <class Acc, class T>
CONDNET_MULTIVERSION void add_rows(Acc* acc, int64_t acc_ld, const T* src, int64_t src_ld,
                                   int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; ++r) {
    Acc* out = acc + r * acc_ld;
    const T* in = src + r * src_ld;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) out[t] += load_as<Acc>(in, t);
  }
}

namespace detail {

inline void check_tile(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.stride(1) == 1, "condnet: internal error: ", name,
              " must be a 2-D tile with contiguous rows, got sizes ", t.sizes(), " strides ",
              t.strides());
}

}  // namespace detail

// acc += src for 2-D tiles of one shape; acc in its accumulation dtype
// (float or double), src in any floating dtype.
inline void add_widened(const at::Tensor& acc, const at::Tensor& src) {
  if (src.scalar_type() == acc.scalar_type()) {
    acc.add_(src);
    return;
  }
  detail::check_tile(acc, "the accumulator");
  detail::check_tile(src, "the added tile");
  TORCH_CHECK(acc.sizes() == src.sizes(), "condnet: internal error: tile shapes differ");
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, src.scalar_type(), "condnet::add_widened", [&] {
        using Acc = at::opmath_type<scalar_t>;
        add_rows<Acc, scalar_t>(acc.mutable_data_ptr<Acc>(), acc.stride(0),
                                src.const_data_ptr<scalar_t>(), src.stride(0), src.size(0),
                                src.size(1));
      });
}

}  // namespace condnet::cpu
