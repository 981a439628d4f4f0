// dynamic_classify on the CPU: a 1x1 classifier whose weights differ per
// image, y[b] = w[b] x[b] + beta[b]. float and double map onto whole-image
// batched GEMMs. float16/bfloat16 go chunk by chunk in float32, so no float32
// copy of x, y or dy is ever made whole.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "output_memory.h"
#include "tiling.h"

namespace condnet::cpu {
namespace {

at::Tensor dynamic_classify_forward(const at::Tensor& x_in, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
  check_dynamic_classify_inputs(x_in, weight, bias);
  const KernelScope scope;
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = weight.size(1);
  at::Tensor y = empty_output({B, K, H, W}, x_in.options());
  if (B == 0) return y;

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  at::Tensor y3 = y.view({B, K, N});
  if (x.scalar_type() == acc_type(x.scalar_type())) {
    // float and double: one batched GEMM that starts from the broadcast bias
    // (beta = 1) writes y once; measured faster than per-chunk GEMMs.
    if (bias.has_value()) {
      at::baddbmm_out(y3, bias->view({B, K, 1}).expand({B, K, N}), weight, x);
    } else {
      at::bmm_out(y3, weight, x);
    }
    return y;
  }
  const auto acc = at::kFloat;
  const at::Tensor wa = weight.to(acc);
  const at::Tensor ba = bias.has_value() ? bias->to(acc).view({B, K, 1})
                                         : at::zeros({B, K, 1}, x.options().dtype(acc));
  const Chunks chunks(N);
  // OpenMP workers start with fresh thread-local state (grad mode, dispatch keys):
  // give them the caller's, which includes this kernel's KernelScope.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard caller_guard(caller_state);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks.count;
      const int64_t start = (item % chunks.count) * chunks.length;
      const int64_t len = std::min(N, start + chunks.length) - start;
      const at::Tensor xc = x[b].narrow(1, start, len).to(acc);
      y3[b].narrow(1, start, len).copy_(at::addmm(ba[b], wa[b], xc));
    }
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_classify_backward(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  check_dynamic_classify_inputs(x_in, weight, std::nullopt);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = weight.size(1);
  check_grad(grad_y, x_in, {B, K, H, W}, "grad_logits");
  const KernelScope scope;
  const auto [need_dx, need_dw, need_db] = output_mask;

  at::Tensor dx = need_dx ? empty_output({B, C, H, W}, x_in.options()) : at::Tensor();
  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor dy = grad_y.contiguous().view({B, K, N});
  if (x.scalar_type() == acc_type(x.scalar_type())) {
    // float and double: whole-image batched GEMMs; on the CPU these beat
    // per-chunk products that share the dy chunk (measured).
    at::Tensor dw, db;
    if (need_dx) {
      at::Tensor out = dx.view({B, C, N});
      at::bmm_out(out, weight.transpose(1, 2), dy);
    }
    if (need_dw) dw = at::bmm(dy, x.transpose(1, 2));
    if (need_db) db = dy.sum(2);
    return {dx, dw, db};
  }

  // float16/bfloat16: chunk by chunk in float32, each dy chunk converted once
  // and used for all three results; partial dw and dbeta summed in order.
  const auto acc = at::kFloat;
  const auto acc_opts = x_in.options().dtype(acc);
  const Chunks chunks(N);
  at::Tensor dw_part = at::empty({B, need_dw ? chunks.count : 0, K, C}, acc_opts);
  at::Tensor db_part = at::empty({B, need_db ? chunks.count : 0, K}, acc_opts);
  const at::Tensor wa_t = weight.to(acc).transpose(1, 2);  // (B, C, K)

  // OpenMP workers start with fresh thread-local state (grad mode, dispatch keys):
  // give them the caller's, which includes this kernel's KernelScope.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard caller_guard(caller_state);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks.count, c = item % chunks.count;
      const int64_t start = c * chunks.length;
      const int64_t len = std::min(N, start + chunks.length) - start;
      const at::Tensor dyc = dy[b].narrow(1, start, len).to(acc);  // (K, len)
      if (need_dx) {
        at::Tensor out = dx.view({B, C, N})[b].narrow(1, start, len);
        out.copy_(at::mm(wa_t[b], dyc));
      }
      if (need_dw) {
        at::Tensor out = dw_part[b][c];
        at::mm_out(out, dyc, x[b].narrow(1, start, len).to(acc).t());
      }
      if (need_db) {
        at::Tensor out = db_part[b][c];
        at::sum_out(out, dyc, 1);
      }
    }
  });
  at::Tensor dw, db;
  if (need_dw) dw = sum_in_order(dw_part, 1).to(weight.scalar_type());
  if (need_db) db = sum_in_order(db_part, 1).to(weight.scalar_type());
  return {dx, dw, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("dynamic_classify", &dynamic_classify_forward);
  m.impl("dynamic_classify_backward", &dynamic_classify_backward);
}

}  // namespace condnet::cpu
