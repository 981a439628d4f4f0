// How the fused classifier reads its per-image classifier (w, beta) off theta
// (B, K, C+1), the projection's output. The layout is an op argument, a
// string, parsed once per call into ThetaLayout; a new layout is one enum
// value, one row of kThetaLayoutNames and one case in split_theta.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

namespace condnet {

enum class ThetaLayout {
  // w[b, k] = theta[b, k, :C], beta[b, k] = theta[b, k, C].
  kPerClass,
  // The released model's grouped-conv storage: theta flattened class-major to
  // (B, K(C+1)), as the grouped conv's outputs; its first K*C are w, its last
  // K beta.
  kGroupedConv,
};

inline constexpr std::array<std::pair<std::string_view, ThetaLayout>, 2> kThetaLayoutNames = {{
    {"per_class", ThetaLayout::kPerClass},
    {"grouped_conv", ThetaLayout::kGroupedConv},
}};

inline ThetaLayout parse_theta_layout(std::string_view layout) {
  std::string accepted;
  for (const auto& [name, value] : kThetaLayoutNames) {
    if (name == layout) return value;
    accepted.append(accepted.empty() ? "'" : ", '").append(name).append("'");
  }
  TORCH_CHECK_VALUE(false, "layout must be one of ", accepted, ", got '", layout, "'");
}

// w (B, K, C) and beta (B, K), as views of theta.
inline std::tuple<at::Tensor, at::Tensor> split_theta(const at::Tensor& theta, ThetaLayout layout) {
  const int64_t B = theta.size(0), K = theta.size(1), C = theta.size(2) - 1;
  switch (layout) {
    case ThetaLayout::kPerClass: return {theta.narrow(2, 0, C), theta.select(2, C)};
    case ThetaLayout::kGroupedConv: {
      const at::Tensor flat = theta.view({B, K * (C + 1)});
      return {flat.narrow(1, 0, K * C).view({B, K, C}), flat.narrow(1, K * C, K)};
    }
  }
  TORCH_CHECK(false, "split_theta: unknown layout ", static_cast<int>(layout));
}

// The inverse: dtheta from the gradients of w and beta.
inline at::Tensor join_theta(const at::Tensor& dw, const at::Tensor& dbeta, const at::Tensor& theta,
                             ThetaLayout layout) {
  at::Tensor dtheta = at::empty_like(theta, at::MemoryFormat::Contiguous);
  const auto [w_part, beta_part] = split_theta(dtheta, layout);
  w_part.copy_(dw);
  beta_part.copy_(dbeta);
  return dtheta;
}

}  // namespace condnet
