// class_pool on the CPU: guide logits, softmax over classes and class-wise
// pooling, fused so that the (B, K, N) softmax map is never materialised.
// Each direction walks x once, tile by tile (see tiling.h). The products run
// in product_type (products.h): 16-bit where the CPU multiplies 16-bit
// natively, else float32; the softmax and every sum across tiles in float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../host/class_pool_host.h"
#include "device.h"
#include "products.h"
#include "tiling.h"

namespace condnet::cpu {
namespace {

// g3 (B, K, N) and f (B, K, C) from x (B, C, N).
void forward_kernel(const at::Tensor& x, const at::Tensor& guide_weight,
                    const at::Tensor& guide_bias, const at::Tensor& g3, const at::Tensor& f) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = guide_weight.size(0);
  const auto acc = acc_type(x.scalar_type());
  const auto prod = product_type(x.scalar_type());
  const bool widened = prod == acc;  // products in the accumulation dtype
  const auto acc_opts = x.options().dtype(acc);
  const at::Tensor wp = guide_weight.to(prod).contiguous();
  const at::Tensor ba =
      guide_bias.defined() ? guide_bias.to(acc).view({K, 1}) : at::zeros({K, 1}, acc_opts);
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
        const at::Tensor xt = x[b].narrow(1, n0, T).to(prod);  // (C, T)
        // (K, T) in acc; a 16-bit product is rounded once, as eager's matmul is.
        const at::Tensor logits = widened ? at::addmm(ba, wp, xt) : at::mm(wp, xt).to(acc).add_(ba);
        g3[b].narrow(1, n0, T).copy_(logits);
        const at::Tensor p = at::_softmax(logits, 0, false);
        if (widened) {
          f_part.addmm_(p, xt.t());
        } else {
          f_part.add_(at::mm(p.to(prod), xt.t()));
        }
      }
    }
  });
  f.copy_(sum_in_order(partial, 1).mul_(1.0 / static_cast<double>(N)));
}

void backward_kernel(const host::ClassPoolGradients& grads) {
  const at::Tensor& x = grads.x;
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = grads.guide_weight.size(0);
  const auto acc = acc_type(x.scalar_type());
  const auto prod = product_type(x.scalar_type());
  const bool widened = prod == acc;  // products in the accumulation dtype
  const auto acc_opts = x.options().dtype(acc);
  const bool need_dx = grads.dx.defined(), need_dw = grads.dw.defined();
  const bool need_db = grads.db.defined();
  const bool classifier_term = grads.grad_logits.defined();
  const Chunks chunks(N);
  // Per-(image, chunk) partial sums of dWg and dbg.
  at::Tensor dw_part = at::empty({B, need_dw ? chunks.count : 0, K, C}, acc_opts);
  at::Tensor db_part = at::empty({B, need_db ? chunks.count : 0, K}, acc_opts);
  const at::Tensor& g3 = grads.guide_logits;
  const at::Tensor& dx3 = grads.dx;
  // The 1/N of the pooling is folded into grad_f once, up front.
  const at::Tensor dfa = grads.grad_class_feats.defined()
                             ? grads.grad_class_feats.to(acc).mul(1.0 / static_cast<double>(N))
                             : at::Tensor();
  const at::Tensor dfp = dfa.defined() ? dfa.to(prod) : at::Tensor();  // (B, K, C)
  const at::Tensor& dg3 = grads.grad_guide_logits;
  const at::Tensor& dy3 = grads.grad_logits;
  // dx is one product per tile, dx = L [dgt; p; dy], with L = [Wg^T, df^T / N,
  // w^T] of the terms that flow (C, 2K + Kc at most), stacked once per image.
  const bool logits_grad = dfa.defined() || dg3.defined();
  at::Tensor dx_left;  // (B, C, rows)
  if (need_dx) {
    std::vector<at::Tensor> parts;
    if (logits_grad) parts.push_back(grads.guide_weight.to(prod).t().expand({B, C, K}));
    if (dfa.defined()) parts.push_back(dfp.transpose(1, 2));
    if (classifier_term) parts.push_back(grads.classifier_weight.to(prod).transpose(1, 2));
    dx_left = at::cat(parts, 2);
  }

  // OpenMP workers start with fresh thread-local state (grad mode, dispatch keys):
  // give them the caller's, which includes this kernel's KernelScope.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard caller_guard(caller_state);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks.count, c = item % chunks.count;
      const int64_t start = c * chunks.length;
      const int64_t stop = std::min(N, start + chunks.length);
      at::Tensor dw = need_dw ? dw_part[b][c].zero_() : at::Tensor();
      at::Tensor db = need_db ? db_part[b][c].zero_() : at::Tensor();
      for (int64_t n0 = start; n0 < stop; n0 += kTile) {
        const int64_t T = std::min(kTile, stop - n0);
        at::Tensor p, dgt;  // (K, T) each, in acc
        at::Tensor xt;      // (C, T) in prod, read only where a product needs it
        if (dfa.defined()) {
          xt = x[b].narrow(1, n0, T).to(prod);
          p = at::_softmax(g3[b].narrow(1, n0, T).to(acc), 0, false);
          // dp = df x / N, then the softmax backward p * (dp - sum_k p * dp).
          dgt = at::_softmax_backward_data(at::mm(dfp[b], xt).to(acc), p, 0, acc);
          if (dg3.defined()) dgt.add_(dg3[b].narrow(1, n0, T));
        } else if (dg3.defined()) {
          dgt = dg3[b].narrow(1, n0, T).to(acc);
        }
        if (need_dx) {
          std::vector<at::Tensor> rows;
          if (dgt.defined()) rows.push_back(dgt.to(prod));
          if (dfa.defined()) rows.push_back(p.to(prod));
          if (classifier_term) rows.push_back(dy3[b].narrow(1, n0, T).to(prod));
          at::Tensor dx_tile = dx3[b].narrow(1, n0, T);
          if (dx_tile.scalar_type() == prod) {
            // Straight into dx: a BLAS output may have a row stride (N here).
            at::mm_out(dx_tile, dx_left[b], at::cat(rows, 0));
          } else {
            dx_tile.copy_(at::mm(dx_left[b], at::cat(rows, 0)));
          }
        }
        if (dw.defined()) {
          if (!xt.defined()) xt = x[b].narrow(1, n0, T).to(prod);
          if (widened) {
            dw.addmm_(dgt, xt.t());
          } else {
            dw.add_(at::mm(dgt.to(prod), xt.t()));
          }
        }
        if (db.defined()) db.add_(dgt.sum(1));
      }
    }
  });
  // Weight gradients: summed over images, then chunks, always in the same order.
  if (need_dw) grads.dw.copy_(sum_in_order(dw_part.flatten(0, 1), 0));
  if (need_db) grads.db.copy_(sum_in_order(db_part.flatten(0, 1), 0));
}

// class_pool's CPU kernels, as host/class_pool_host.h calls them.
struct ClassPoolKernels : Device {
  static constexpr auto forward = &forward_kernel;
  static constexpr auto backward = &backward_kernel;
};

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("class_pool", &host::class_pool_forward<ClassPoolKernels>);
  m.impl("class_pool_backward", &host::class_pool_backward<ClassPoolKernels>);
}

}  // namespace condnet::cpu
