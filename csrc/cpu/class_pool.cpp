// class_pool on the CPU: guide logits, softmax over classes and class-wise
// pooling, fused so that the (B, K, N) softmax map is never materialised.
// Each direction walks x once, tile by tile (see tiling.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "output_memory.h"
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
  at::Tensor g = empty_output({B, K, H, W}, x_in.options());
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

  // OpenMP workers start with fresh thread-local state (grad mode, dispatch keys):
  // give them the caller's, which includes this kernel's KernelScope.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard caller_guard(caller_state);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks.count, c = item % chunks.count;
      const int64_t start = c * chunks.length;
      const int64_t stop = std::min(N, start + chunks.length);
      at::Tensor f_part = partial[b][c].zero_();
      for (int64_t n0 = start; n0 < stop; n0 += kTile) {
        const int64_t T = std::min(kTile, stop - n0);
        const at::Tensor xt = x[b].narrow(1, n0, T).to(acc);  // (C, T)
        const at::Tensor logits = at::addmm(ba, wa, xt);        // (K, T)
        g3[b].narrow(1, n0, T).copy_(logits);
        f_part.addmm_(at::_softmax(logits, 0, false), xt.t());
      }
    }
  });
  f.copy_(sum_in_order(partial, 1).mul_(1.0 / static_cast<double>(N)));
  return {g, f};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_pool_backward(
    const std::optional<at::Tensor>& grad_g, const std::optional<at::Tensor>& grad_f,
    const at::Tensor& x_in, const at::Tensor& guide_weight, const at::Tensor& guide_logits,
    std::array<bool, 3> output_mask, const std::optional<at::Tensor>& grad_logits,
    const std::optional<at::Tensor>& classifier_weight) {
  check_class_pool_inputs(x_in, guide_weight, std::nullopt);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = guide_weight.size(0);
  check_grad(guide_logits, x_in, {B, K, H, W}, "guide_logits");
  check_grad(grad_g, x_in, {B, K, H, W}, "grad_guide_logits");
  check_grad(grad_f, x_in, {B, K, C}, "grad_class_feats");
  check_classifier_term(grad_logits, classifier_weight, x_in);
  const KernelScope scope;
  const auto [need_dx, need_dw, need_db] = output_mask;

  const auto acc = acc_type(x_in.scalar_type());
  const auto acc_opts = x_in.options().dtype(acc);
  const bool pooled = grad_g.has_value() || grad_f.has_value();
  // The dynamic classifier's dx term, w^T dy, added into the same dx.
  const bool classifier_term = need_dx && grad_logits.has_value();
  const Chunks chunks(N);
  // Per-(image, chunk) partial sums of dWg and dbg; none when nothing flows back.
  const int64_t parts = pooled ? chunks.count : 0;
  at::Tensor dx;
  if (need_dx) dx = empty_output({B, C, H, W}, x_in.options());
  if (need_dx && !pooled && !classifier_term) dx.zero_();
  at::Tensor dw_part = at::empty({B, need_dw ? parts : 0, K, C}, acc_opts);
  at::Tensor db_part = at::empty({B, need_db ? parts : 0, K}, acc_opts);
  if (B > 0 && (pooled || classifier_term)) {
    const at::Tensor x = x_in.contiguous().view({B, C, N});
    const at::Tensor g3 = guide_logits.contiguous().view({B, K, N});
    const at::Tensor dx3 = need_dx ? dx.view({B, C, N}) : at::Tensor();
    const at::Tensor wa_t = guide_weight.to(acc).t();  // (C, K)
    // The 1/N of the pooling is folded into grad_f once, up front.
    const at::Tensor dfa =
        grad_f.has_value() ? grad_f->to(acc).mul(1.0 / static_cast<double>(N)) : at::Tensor();
    const at::Tensor dg3 =
        grad_g.has_value() ? grad_g->contiguous().view({B, K, N}) : at::Tensor();
    const int64_t Kc = classifier_term ? classifier_weight->size(1) : 0;
    const at::Tensor dy3 =
        classifier_term ? grad_logits->contiguous().view({B, Kc, N}) : at::Tensor();
    const at::Tensor cw_t =
        classifier_term ? classifier_weight->to(acc).transpose(1, 2) : at::Tensor();  // (B, C, Kc)

    // OpenMP workers start with fresh thread-local state (grad mode, dispatch keys):
    // give them the caller's, which includes this kernel's KernelScope.
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard caller_guard(caller_state);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / chunks.count, c = item % chunks.count;
        const int64_t start = c * chunks.length;
        const int64_t stop = std::min(N, start + chunks.length);
        at::Tensor dw = need_dw && pooled ? dw_part[b][c].zero_() : at::Tensor();
        at::Tensor db = need_db && pooled ? db_part[b][c].zero_() : at::Tensor();
        for (int64_t n0 = start; n0 < stop; n0 += kTile) {
          const int64_t T = std::min(kTile, stop - n0);
          at::Tensor p, dgt;  // (K, T) each
          at::Tensor xt;      // (C, T), read only where a product needs it
          if (dfa.defined()) {
            xt = x[b].narrow(1, n0, T).to(acc);
            p = at::_softmax(g3[b].narrow(1, n0, T).to(acc), 0, false);
            // dp = df x / N, then the softmax backward p * (dp - sum_k p * dp).
            dgt = at::_softmax_backward_data(at::mm(dfa[b], xt), p, 0, acc);
            if (dg3.defined()) dgt.add_(dg3[b].narrow(1, n0, T));
          } else if (dg3.defined()) {
            dgt = dg3[b].narrow(1, n0, T).to(acc);
          }
          if (need_dx) {
            at::Tensor dxt;
            if (dgt.defined()) {
              dxt = at::mm(wa_t, dgt);
              if (dfa.defined()) dxt.addmm_(dfa[b].t(), p);
            }
            if (classifier_term) {
              const at::Tensor dyt = dy3[b].narrow(1, n0, T).to(acc);
              dxt = dxt.defined() ? dxt.addmm_(cw_t[b], dyt) : at::mm(cw_t[b], dyt);
            }
            dx3[b].narrow(1, n0, T).copy_(dxt);
          }
          if (dw.defined()) {
            if (!xt.defined()) xt = x[b].narrow(1, n0, T).to(acc);
            dw.addmm_(dgt, xt.t());
          }
          if (db.defined()) db.add_(dgt.sum(1));
        }
      }
    });
  }
  // Weight gradients: summed over images, then chunks, always in the same order.
  at::Tensor dw, db;
  if (need_dw) dw = sum_in_order(dw_part.flatten(0, 1), 0).to(guide_weight.scalar_type());
  if (need_db) db = sum_in_order(db_part.flatten(0, 1), 0).to(guide_weight.scalar_type());
  return {dx, dw, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("class_pool", &class_pool_forward);
  m.impl("class_pool_backward", &class_pool_backward);
}

}  // namespace condnet::cpu
