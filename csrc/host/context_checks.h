// Input checks of CAC's primitive ops (context_pool, cosine_classify and
// their backwards), shared by the CPU and CUDA kernels. The Python wrappers
// (condnet/ops/context_validation.py) check the same things first with
// friendlier messages; these guard direct torch.ops calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>

#include "../checks.h"
#include "../kernel_host.h"

namespace condnet {

// guide_weight (K, C) or, one per image, (B, K, C); returns K.
inline int64_t check_context_pool_inputs(const at::Tensor& x, const at::Tensor& guide_weight,
                                         const std::optional<at::Tensor>& guide_bias) {
  check_features(x);
  const int64_t B = x.size(0), C = x.size(1);
  const bool shared = guide_weight.dim() == 2 && guide_weight.size(1) == C;
  const bool per_image =
      guide_weight.dim() == 3 && guide_weight.size(0) == B && guide_weight.size(2) == C;
  TORCH_CHECK_VALUE((shared || per_image) && guide_weight.size(-2) > 0,
                    "guide_weight must have shape (K, ", C, ") or (", B, ", K, ", C,
                    ") with K >= 1, got ", guide_weight.sizes());
  check_same(guide_weight, x, "guide_weight");
  const int64_t K = guide_weight.size(-2);
  check_vector(guide_bias, x, K, "guide_bias");
  return K;
}

// The cosine classifier's weight: (B, K, C), already scaled and normalised.
inline void check_cosine_weight(const at::Tensor& x, const at::Tensor& weight, const char* name) {
  TORCH_CHECK_VALUE(weight.dim() == 3 && weight.size(0) == x.size(0) &&
                        weight.size(2) == x.size(1) && weight.size(1) > 0,
                    name, " must have shape (", x.size(0), ", K, ", x.size(1),
                    ") with K >= 1, got ", weight.sizes());
  check_same(weight, x, name);
}

inline void check_eps(double eps) { TORCH_CHECK_VALUE(eps >= 0, "eps must be >= 0, got ", eps); }

// x_norm (B, H, W): float32 for float16/bfloat16 x, else x's dtype.
inline void check_x_norm(const at::Tensor& x_norm, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x_norm.dim() == 3 && x_norm.size(0) == x.size(0) &&
                        x_norm.size(1) == x.size(2) && x_norm.size(2) == x.size(3),
                    "x_norm must have shape (", x.size(0), ", ", x.size(2), ", ", x.size(3),
                    ") from x, got ", x_norm.sizes());
  const auto want = acc_type(x.scalar_type());
  TORCH_CHECK_TYPE(x_norm.scalar_type() == want, "x_norm must have dtype ", want, " for x of ",
                   x.scalar_type(), ", got ", x_norm.scalar_type());
  TORCH_CHECK_VALUE(x_norm.device() == x.device(), "x_norm must be on x's device ", x.device(),
                    ", got ", x_norm.device());
}

// The cosine classifier's part of context_pool_backward: grad_logits,
// classifier, logits and x_norm, all four or none. Returns whether given.
inline bool check_cosine_term(const std::optional<at::Tensor>& grad_logits,
                              const std::optional<at::Tensor>& classifier,
                              const std::optional<at::Tensor>& logits,
                              const std::optional<at::Tensor>& x_norm, const at::Tensor& x) {
  const bool given = grad_logits.has_value();
  TORCH_CHECK_VALUE(
      classifier.has_value() == given && logits.has_value() == given && x_norm.has_value() == given,
      "grad_logits, classifier, logits and x_norm must be given together (the cosine "
      "classifier's term of dx), got ",
      given ? "grad_logits without all three others" : "some of them without grad_logits");
  if (!given) return false;
  check_cosine_weight(x, *classifier, "classifier");
  const std::array<int64_t, 4> maps{x.size(0), classifier->size(1), x.size(2), x.size(3)};
  check_grad(grad_logits, x, maps, "grad_logits");
  check_grad(logits, x, maps, "logits");
  check_x_norm(*x_norm, x);
  return true;
}

}  // namespace condnet
