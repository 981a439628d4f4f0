// class_pool on the CPU: guide logits, softmax over classes and class-wise
// pooling, fused so that the (B, K, N) softmax map is never materialised.
// Each direction walks x once, tile by tile (see tiling.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "tiling.h"

namespace condnet::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> class_pool_forward(
    const at::Tensor& x_in, const at::Tensor& guide_weight,
    const std::optional<at::Tensor>& guide_bias) {
  check_class_pool_inputs(x_in, guide_weight, guide_bias);
  const KernelScope scope;
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = guide_weight.size(0);
  at::Tensor g = at::empty({B, K, H, W}, x_in.options());
  at::Tensor f = at::empty({B, K, C}, x_in.options());
  if (B == 0) return {g, f};

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor g3 = g.view({B, K, N});
  const auto acc = acc_type(x.scalar_type());
  const auto acc_opts = x.options().dtype(acc);
  const at::Tensor wa = guide_weight.to(acc).contiguous();
  const at::Tensor ba = guide_bias.has_value() ? guide_bias->to(acc).view({K, 1})
                                               : at::zeros({K, 1}, acc_opts);
  const Chunks chunks(N);
  at::Tensor partial = at::empty({B, chunks.count, K, C}, acc_opts);

  AT_DISPATCH_FLOATING_TYPES(acc, "condnet_class_pool_cpu", [&] {
    using acc_t = scalar_t;
    at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> col_max(kTile), col_sum(kTile);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / chunks.count;
        const int64_t start = (item % chunks.count) * chunks.length;
        const int64_t stop = std::min(N, start + chunks.length);
        at::Tensor f_part = partial[b][item % chunks.count].zero_();
        for (int64_t n0 = start; n0 < stop; n0 += kTile) {
          const int64_t T = std::min(kTile, stop - n0);
          const at::Tensor xt = x[b].narrow(1, n0, T).to(acc);  // (C, T)
          at::Tensor p = at::addmm(ba, wa, xt);                   // (K, T) logits
          g3[b].narrow(1, n0, T).copy_(p);
          softmax_over_rows(p.data_ptr<acc_t>(), K, T, col_max.data(), col_sum.data());
          f_part.addmm_(p, xt.t());
        }
      }
    });
  });
  f.copy_(sum_chunks(partial).mul_(1.0 / static_cast<double>(N)));
  return {g, f};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_pool_backward(
    const std::optional<at::Tensor>& grad_g, const std::optional<at::Tensor>& grad_f,
    const at::Tensor& x_in, const at::Tensor& guide_weight, const at::Tensor& guide_logits) {
  check_class_pool_inputs(x_in, guide_weight, std::nullopt);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = guide_weight.size(0);
  check_grad(guide_logits, x_in, {B, K, H, W}, "guide_logits");
  check_grad(grad_g, x_in, {B, K, H, W}, "grad_guide_logits");
  check_grad(grad_f, x_in, {B, K, C}, "grad_class_feats");
  const KernelScope scope;

  const auto acc = acc_type(x_in.scalar_type());
  const auto acc_opts = x_in.options().dtype(acc);
  at::Tensor dx = at::empty({B, C, H, W}, x_in.options());
  if (B == 0 || (!grad_g.has_value() && !grad_f.has_value())) {
    return {dx.zero_(), at::zeros(guide_weight.sizes(), x_in.options()), at::zeros({K}, x_in.options())};
  }

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor g3 = guide_logits.contiguous().view({B, K, N});
  const at::Tensor dx3 = dx.view({B, C, N});
  const at::Tensor wa_t = guide_weight.to(acc).t();  // (C, K)
  // The 1/N of the pooling is folded into grad_f once, up front.
  const at::Tensor dfa =
      grad_f.has_value() ? grad_f->to(acc).mul(1.0 / static_cast<double>(N)) : at::Tensor();
  const at::Tensor dg3 = grad_g.has_value() ? grad_g->contiguous().view({B, K, N}) : at::Tensor();
  const Chunks chunks(N);
  at::Tensor dw_part = at::empty({B, chunks.count, K, C}, acc_opts);
  at::Tensor db_part = at::empty({B, chunks.count, K}, acc_opts);

  AT_DISPATCH_FLOATING_TYPES(acc, "condnet_class_pool_backward_cpu", [&] {
    using acc_t = scalar_t;
    at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> col_max(kTile), col_sum(kTile);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / chunks.count, c = item % chunks.count;
        const int64_t start = c * chunks.length;
        const int64_t stop = std::min(N, start + chunks.length);
        at::Tensor dw = dw_part[b][c].zero_();
        at::Tensor db = db_part[b][c].zero_();
        for (int64_t n0 = start; n0 < stop; n0 += kTile) {
          const int64_t T = std::min(kTile, stop - n0);
          const at::Tensor xt = x[b].narrow(1, n0, T).to(acc);  // (C, T)
          at::Tensor dgt;                                        // (K, T) grad of logits
          at::Tensor p;
          if (dfa.defined()) {
            p = at::empty({K, T}, acc_opts).copy_(g3[b].narrow(1, n0, T));
            softmax_over_rows(p.data_ptr<acc_t>(), K, T, col_max.data(), col_sum.data());
            // Softmax backward: dgt = p * (dp - sum_k p * dp), with dp = df x / N.
            dgt = at::mm(dfa[b], xt);
            acc_t* dp = dgt.data_ptr<acc_t>();
            const acc_t* pp = p.data_ptr<acc_t>();
            std::fill(col_sum.begin(), col_sum.begin() + T, acc_t(0));
            for (int64_t k = 0; k < K; ++k)
              for (int64_t t = 0; t < T; ++t) col_sum[t] += pp[k * T + t] * dp[k * T + t];
            for (int64_t k = 0; k < K; ++k)
              for (int64_t t = 0; t < T; ++t)
                dp[k * T + t] = pp[k * T + t] * (dp[k * T + t] - col_sum[t]);
            if (dg3.defined()) dgt.add_(dg3[b].narrow(1, n0, T));
          } else {
            dgt = dg3[b].narrow(1, n0, T).to(acc);
          }
          at::Tensor dxt = at::mm(wa_t, dgt);
          if (dfa.defined()) dxt.addmm_(dfa[b].t(), p);
          dx3[b].narrow(1, n0, T).copy_(dxt);
          dw.addmm_(dgt, xt.t());
          db.add_(dgt.sum(1));
        }
      }
    });
  });
  // Weight gradients: sum over images, then chunks, always in the same order.
  at::Tensor dw = sum_chunks(dw_part.view({1, B * chunks.count, K, C})).squeeze(0);
  at::Tensor db = sum_chunks(db_part.view({1, B * chunks.count, K})).squeeze(0);
  return {dx, dw.to(guide_weight.scalar_type()), db.to(guide_weight.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("class_pool", &class_pool_forward);
  m.impl("class_pool_backward", &class_pool_backward);
}

}  // namespace condnet::cpu
