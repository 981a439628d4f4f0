// Host-side pieces shared by the CPU and CUDA kernels: the accumulation
// type, a scope for composing ATen ops as plain math, and a deterministic
// sum of partial results.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <type_traits>

namespace condnet {

// The kernels compose ATen ops on tiles and partial sums; those must run as
// plain math, not be recorded by autograd or recast by an enclosing autocast
// region.
struct KernelScope {
  at::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autocast{c10::autocast_dispatch_keyset};
};

// float for float/half/bfloat16 inputs, double for double.
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// body(T{}, TW{}) for the projection's feature dtype T (f's) and weight
// dtype TW (A's): TW is T, or float for float16/bfloat16 features, which is
// how autocast training with float32 master weights calls it.
template <class Body>
void dispatch_project_types(const at::Tensor& f, const at::Tensor& A, const Body& body) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, f.scalar_type(), "condnet::project", [&] {
        using T = scalar_t;
        if constexpr (std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>) {
          if (A.scalar_type() == at::kFloat) {
            body(T{}, float{});
            return;
          }
        }
        body(T{}, T{});
      });
}

// Sums partial results over dimension `dim` strictly in index order, so the
// result never depends on how ATen would split a reduction across threads.
inline at::Tensor sum_in_order(const at::Tensor& partials, int64_t dim) {
  if (partials.size(dim) == 0) {
    auto shape = partials.sizes().vec();
    shape.erase(shape.begin() + dim);
    return at::zeros(shape, partials.options());
  }
  at::Tensor total = partials.select(dim, 0).clone();
  for (int64_t i = 1; i < partials.size(dim); ++i) total.add_(partials.select(dim, i));
  return total;
}

}  // namespace condnet
