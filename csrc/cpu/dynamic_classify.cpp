// dynamic_classify on the CPU: a 1x1 classifier whose weights differ per
// image, y[b] = w[b] x[b] + beta[b]. The backward makes one pass over x,
// producing dx tile by tile and accumulating dw and dbeta per chunk.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../checks.h"
#include "tiling.h"

namespace condnet::cpu {
namespace {

at::Tensor dynamic_classify_forward(const at::Tensor& x_in, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
  check_dynamic_classify_inputs(x_in, weight, bias);
  const KernelScope scope;
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = weight.size(1);
  at::Tensor y = at::empty({B, K, H, W}, x_in.options());
  if (B == 0) return y;

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor y3 = y.view({B, K, N});
  const auto acc = acc_type(x.scalar_type());
  const at::Tensor wa = weight.to(acc);
  const at::Tensor ba = bias.has_value() ? bias->to(acc).view({B, K, 1})
                                         : at::zeros({B, K, 1}, x.options().dtype(acc));
  const Chunks chunks(N);
  at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks.count;
      const int64_t start = (item % chunks.count) * chunks.length;
      const int64_t stop = std::min(N, start + chunks.length);
      for (int64_t n0 = start; n0 < stop; n0 += kTile) {
        const int64_t T = std::min(kTile, stop - n0);
        y3[b].narrow(1, n0, T).copy_(at::addmm(ba[b], wa[b], x[b].narrow(1, n0, T).to(acc)));
      }
    }
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_classify_backward(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight) {
  check_dynamic_classify_inputs(x_in, weight, std::nullopt);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = weight.size(1);
  check_grad(grad_y, x_in, {B, K, H, W}, "grad_logits");
  const KernelScope scope;
  at::Tensor dx = at::empty({B, C, H, W}, x_in.options());
  if (B == 0) return {dx, at::zeros(weight.sizes(), x_in.options()), at::zeros({B, K}, x_in.options())};

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor dy = grad_y.contiguous().view({B, K, N});
  const at::Tensor dx3 = dx.view({B, C, N});
  const auto acc = acc_type(x.scalar_type());
  const auto acc_opts = x.options().dtype(acc);
  const at::Tensor wa_t = weight.to(acc).transpose(1, 2);  // (B, C, K)
  const Chunks chunks(N);
  at::Tensor dw_part = at::empty({B, chunks.count, K, C}, acc_opts);
  at::Tensor db_part = at::empty({B, chunks.count, K}, acc_opts);

  at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks.count, c = item % chunks.count;
      const int64_t start = c * chunks.length;
      const int64_t stop = std::min(N, start + chunks.length);
      at::Tensor dw = dw_part[b][c].zero_();
      at::Tensor db = db_part[b][c].zero_();
      for (int64_t n0 = start; n0 < stop; n0 += kTile) {
        const int64_t T = std::min(kTile, stop - n0);
        const at::Tensor xt = x[b].narrow(1, n0, T).to(acc);   // (C, T)
        const at::Tensor dyt = dy[b].narrow(1, n0, T).to(acc);  // (K, T)
        dx3[b].narrow(1, n0, T).copy_(at::mm(wa_t[b], dyt));
        dw.addmm_(dyt, xt.t());
        db.add_(dyt.sum(1));
      }
    }
  });
  return {dx, sum_chunks(dw_part).to(weight.scalar_type()),
          sum_chunks(db_part).to(weight.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("dynamic_classify", &dynamic_classify_forward);
  m.impl("dynamic_classify_backward", &dynamic_classify_backward);
}

}  // namespace condnet::cpu
