// dynamic_classify on the CPU: a 1x1 classifier whose weights differ per
// image, y[b] = w[b] x[b] + beta[b]. float and double map onto whole-image
// batched GEMMs, and so do float16/bfloat16 where the CPU multiplies them
// natively (products.h); elsewhere those go chunk by chunk in float32, so no
// float32 copy of x, y or dy is ever made whole.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

#include "../host/dynamic_classify_host.h"
#include "device.h"
#include "products.h"
#include "tiling.h"

namespace condnet::cpu {
namespace {

void forward_kernel(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& y) {
  const int64_t B = x.size(0), N = x.size(2), K = weight.size(1);
  at::Tensor y3 = y;  // the _out ops take their output by non-const reference
  if (x.scalar_type() == product_type(x.scalar_type())) {
    // float and double, and 16-bit features on a CPU that multiplies them
    // natively (products.h): one batched GEMM that starts from the broadcast
    // bias (beta = 1) writes y once; measured faster than per-chunk GEMMs.
    if (bias.defined()) {
      at::baddbmm_out(y3, bias.view({B, K, 1}).expand({B, K, N}), weight, x);
    } else {
      at::bmm_out(y3, weight, x);
    }
    return;
  }
  const auto acc = at::kFloat;
  const at::Tensor wa = weight.to(acc);
  const at::Tensor ba =
      bias.defined() ? bias.to(acc).view({B, K, 1}) : at::zeros({B, K, 1}, x.options().dtype(acc));
  const Chunks chunks(N);
  for_each_chunk(B, chunks, [&](int64_t b, int64_t, int64_t start, int64_t stop) {
    const at::Tensor xc = x[b].narrow(1, start, stop - start).to(acc);
    y3[b].narrow(1, start, stop - start).copy_(at::addmm(ba[b], wa[b], xc));
  });
}

void backward_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& dx, const at::Tensor& dw, const at::Tensor& db) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = weight.size(1);
  const bool need_dx = dx.defined(), need_dw = dw.defined(), need_db = db.defined();
  if (x.scalar_type() == product_type(x.scalar_type())) {
    // float and double, and natively multiplied 16-bit features: whole-image
    // batched GEMMs; on the CPU these beat per-chunk products that share the
    // dy chunk (measured).
    if (need_dx) {
      at::Tensor out = dx;
      at::bmm_out(out, weight.transpose(1, 2), dy);
    }
    if (need_dw) {
      at::Tensor out = dw;
      at::bmm_out(out, dy, x.transpose(1, 2));
    }
    if (need_db) {
      at::Tensor out = db;
      at::sum_out(out, dy, 2);
    }
    return;
  }

  // float16/bfloat16 elsewhere: chunk by chunk in float32, each dy chunk converted once
  // and used for all three results; partial dw and dbeta summed in order.
  const auto acc = at::kFloat;
  const auto acc_opts = x.options().dtype(acc);
  const Chunks chunks(N);
  at::Tensor dw_part = at::empty({B, need_dw ? chunks.count : 0, K, C}, acc_opts);
  at::Tensor db_part = at::empty({B, need_db ? chunks.count : 0, K}, acc_opts);
  const at::Tensor wa_t = weight.to(acc).transpose(1, 2);  // (B, C, K)

  for_each_chunk(B, chunks, [&](int64_t b, int64_t c, int64_t start, int64_t stop) {
    const int64_t len = stop - start;
    const at::Tensor dyc = dy[b].narrow(1, start, len).to(acc);  // (K, len)
    if (need_dx) dx[b].narrow(1, start, len).copy_(at::mm(wa_t[b], dyc));
    if (need_dw) {
      at::Tensor out = dw_part[b][c];
      at::mm_out(out, dyc, x[b].narrow(1, start, len).to(acc).t());
    }
    if (need_db) {
      at::Tensor out = db_part[b][c];
      at::sum_out(out, dyc, 1);
    }
  });
  if (need_dw) dw.copy_(sum_in_order(dw_part, 1));
  if (need_db) db.copy_(sum_in_order(db_part, 1));
}

// dynamic_classify's CPU kernels, as host/dynamic_classify_host.h calls them.
struct DynamicClassifyKernels : Device {
  static constexpr auto forward = &forward_kernel;
  static constexpr auto backward = &backward_kernel;
};

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("dynamic_classify", &host::dynamic_classify_forward<DynamicClassifyKernels>);
  m.impl("dynamic_classify_backward", &host::dynamic_classify_backward<DynamicClassifyKernels>);
}

}  // namespace condnet::cpu
