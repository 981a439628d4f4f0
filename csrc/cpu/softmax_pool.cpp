// The softmax pooling's tile loops, forward and backward (softmax_pool.h).
#include "softmax_pool.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "../kernel_host.h"
#include "cosine_tile.h"
#include "output_memory.h"
#include "products.h"
#include "softmax_tile.h"
#include "tiling.h"
#include "widen_tile.h"

namespace condnet::cpu {
namespace {

// (K, C) -> a (B, K, C) view with the same matrix for every image.
at::Tensor per_image(const at::Tensor& weight, int64_t B) {
  return weight.dim() == 2 ? weight.unsqueeze(0).expand({B, weight.size(0), weight.size(1)})
                           : weight;
}

}  // namespace

PooledSums softmax_pool_forward(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& g3, bool with_mass) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = weight.size(-2);
  const auto acc = acc_type(x.scalar_type());
  const auto prod = product_type(x.scalar_type());
  const bool widened = prod == acc;  // products in the accumulation dtype
  const auto acc_opts = x.options().dtype(acc);
  const at::Tensor wp = per_image(weight.to(prod).contiguous(), B);
  const at::Tensor ba =
      bias.defined() ? bias.to(acc).contiguous().view({K, 1}) : at::zeros({K, 1}, acc_opts);
  const Chunks chunks(N);
  const int64_t tile = tile_pixels(prod);
  // The (image, chunk) partial sums are megabytes, written once per call:
  // backed by huge pages where the kernel allows (output_memory.h).
  at::Tensor partial = empty_output({B, chunks.count, K, C}, acc_opts);
  at::Tensor mass_partial = at::empty({B, with_mass ? chunks.count : 0, K}, acc_opts);

  for_each_chunk(B, chunks, [&](int64_t b, int64_t c, int64_t start, int64_t stop) {
    at::Tensor sums = partial[b][c].zero_();
    at::Tensor mass = with_mass ? mass_partial[b][c].zero_() : at::Tensor();
    const std::optional<SoftmaxScratch> scratch =
        widened ? std::nullopt
                : std::make_optional<SoftmaxScratch>(K, std::min(tile, stop - start), acc_opts);
    for (int64_t n0 = start; n0 < stop; n0 += tile) {
      const int64_t T = std::min(tile, stop - n0);
      const at::Tensor xt = x[b].narrow(1, n0, T).to(prod);  // (C, T)
      at::Tensor g_tile = g3[b].narrow(1, n0, T);            // (K, T)
      if (!widened) {
        // 16-bit products: W x is rounded once, as eager's matmul is; the
        // softmax, g and the rounded p for the pooling product in one fused
        // pass (softmax_tile.h).
        const at::Tensor p = at::empty({K, T}, x.options().dtype(prod));
        softmax_forward_tile(at::mm(wp[b], xt), ba, g_tile, p, mass, *scratch);
        add_widened(sums, at::mm(p, xt.t()));
        continue;
      }
      at::Tensor logits;  // (K, T) in acc
      if (g_tile.scalar_type() == acc) {
        // Straight into g: a BLAS output may have a row stride (N here).
        at::addmm_out(g_tile, ba, wp[b], xt);
        logits = g_tile;
      } else {
        logits = at::addmm(ba, wp[b], xt);
        g_tile.copy_(logits);
      }
      const at::Tensor p = at::_softmax(logits, 0, false);
      if (mass.defined()) mass.add_(p.sum(1));
      sums.addmm_(p, xt.t());
    }
  });
  PooledSums out;
  out.sums = sum_in_order(partial, 1);
  if (with_mass) out.mass = sum_in_order(mass_partial, 1);
  return out;
}

void pool_backward(const PoolGradients& grads) {
  const at::Tensor& x = grads.x;
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2);
  const auto acc = acc_type(x.scalar_type());
  const auto prod = product_type(x.scalar_type());
  const bool widened = prod == acc;  // products in the accumulation dtype
  const auto acc_opts = x.options().dtype(acc);
  const ClassifierGradients& cls = grads.classifier;
  // ds flows where any of the pooling's gradients does; P is needed where dP does.
  const bool with_p = grads.grad_sums.defined() || grads.grad_mass.defined();
  const bool pooled = with_p || grads.grad_logits.defined();
  const bool need_dx = grads.dx.defined(), need_dw = grads.dw.defined();
  const bool need_db = grads.db.defined();
  const bool cls_dx = need_dx && cls.weight.defined();
  const bool cls_dw = cls.dw.defined();
  const int64_t K = pooled ? grads.weight.size(-2) : 0;
  const int64_t K2 = cls.weight.defined() ? cls.weight.size(1) : 0;
  const Chunks chunks(N);
  const int64_t tile = tile_pixels(prod);
  // Per-(image, chunk) partial sums of the weight gradients.
  at::Tensor dw_part = empty_output({B, need_dw ? chunks.count : 0, K, C}, acc_opts);
  at::Tensor db_part = at::empty({B, need_db ? chunks.count : 0, K}, acc_opts);
  at::Tensor cls_dw_part = empty_output({B, cls_dw ? chunks.count : 0, K2, C}, acc_opts);
  const at::Tensor dsums = grads.grad_sums.defined() ? grads.grad_sums.to(prod) : at::Tensor();
  const at::Tensor dmass =
      grads.grad_mass.defined() ? grads.grad_mass.to(acc).contiguous().unsqueeze(-1) : at::Tensor();
  // dx is one product per tile, dx = L [ds; P; dy'], with L = [W^T, grad_sums^T,
  // w^T] of the terms that flow (C, 2K + K2 at most), stacked once per image.
  at::Tensor dx_left;  // (B, C, right_rows)
  const int64_t right_rows = (pooled ? K : 0) + (dsums.defined() ? K : 0) + (cls_dx ? K2 : 0);
  if (need_dx) {
    std::vector<at::Tensor> parts;
    if (pooled) parts.push_back(per_image(grads.weight.to(prod), B).transpose(1, 2));
    if (dsums.defined()) parts.push_back(dsums.transpose(1, 2));
    if (cls_dx) parts.push_back(cls.weight.to(prod).transpose(1, 2));
    dx_left = at::cat(parts, 2);
  }

  for_each_chunk(B, chunks, [&](int64_t b, int64_t c, int64_t start, int64_t stop) {
    at::Tensor dw = need_dw ? dw_part[b][c].zero_() : at::Tensor();
    at::Tensor db = need_db ? db_part[b][c].zero_() : at::Tensor();
    at::Tensor cdw = cls_dw ? cls_dw_part[b][c].zero_() : at::Tensor();
    // The fused softmax (softmax_tile.h) where the products are 16-bit.
    const bool fused = with_p && !widened;
    const std::optional<SoftmaxScratch> scratch =
        fused ? std::make_optional<SoftmaxScratch>(K, std::min(tile, stop - start), acc_opts)
              : std::nullopt;
    for (int64_t n0 = start; n0 < stop; n0 += tile) {
      const int64_t T = std::min(tile, stop - n0);
      // (C, T) in prod, converted once and only where a product needs it.
      at::Tensor xt_cache;
      const auto xt = [&] {
        if (!xt_cache.defined()) xt_cache = x[b].narrow(1, n0, T).to(prod);
        return xt_cache;
      };
      // dx's right factor [ds; P; dy'] in prod, each block written once
      // straight into place; the ds and dy' blocks serve dw and the
      // classifier's dw too.
      const at::Tensor right =
          need_dx ? at::empty({right_rows, T}, x.options().dtype(prod)) : at::Tensor();
      const at::Tensor p_rows = need_dx && dsums.defined() ? right.narrow(0, K, K) : at::Tensor();
      at::Tensor ds_p = need_dx && pooled ? right.narrow(0, 0, K) : at::Tensor();  // ds in prod
      at::Tensor ds;  // (K, T) in acc, unless fused
      if (fused) {
        if (!ds_p.defined()) ds_p = at::empty({K, T}, x.options().dtype(prod));
        softmax_backward_tile(
            grads.logits[b].narrow(1, n0, T),
            dsums.defined() ? at::mm(dsums[b], xt()) : at::Tensor(),
            dmass.defined() ? dmass[b] : at::Tensor(),
            grads.grad_logits.defined() ? grads.grad_logits[b].narrow(1, n0, T) : at::Tensor(),
            ds_p, p_rows, db, *scratch);
      } else if (pooled) {
        if (with_p) {
          const at::Tensor p = at::_softmax(grads.logits[b].narrow(1, n0, T).to(acc), 0, false);
          at::Tensor dp;  // dP = grad_sums x + grad_mass
          if (dsums.defined()) {
            dp = at::mm(dsums[b], xt());
            if (dmass.defined()) dp.add_(dmass[b]);
          } else {
            dp = dmass[b].expand({K, T});
          }
          ds = at::_softmax_backward_data(dp, p, 0, acc);
          if (grads.grad_logits.defined()) add_widened(ds, grads.grad_logits[b].narrow(1, n0, T));
          if (p_rows.defined()) p_rows.copy_(p);
        } else {
          ds = grads.grad_logits[b].narrow(1, n0, T).to(acc);
        }
        if (ds_p.defined()) ds_p.copy_(ds);
        if (db.defined()) db.add_(ds.sum(1));
      }
      at::Tensor cls_rows, x_coef;  // (K2, T) in prod: dy, or dy / r for cosine; (T) in acc
      if (cls_dx || cls_dw) {
        const at::Tensor dy = cls.grad_logits[b].narrow(1, n0, T);
        cls_rows = cls_dx ? right.narrow(0, right_rows - K2, K2) : at::Tensor();
        if (cls.cosine()) {
          if (!cls_rows.defined()) cls_rows = at::empty({K2, T}, x.options().dtype(prod));
          x_coef = cosine_tile_grad(dy, cls.logits[b].narrow(1, n0, T),
                                    cls.x_norm[b].narrow(0, n0, T), cls.eps, cls_dx, cls_rows);
        } else {
          cls_rows = cls_rows.defined() ? cls_rows.copy_(dy) : dy.to(prod);
        }
      }
      if (need_dx) {
        at::Tensor dx_tile = grads.dx[b].narrow(1, n0, T);
        if (dx_tile.scalar_type() == prod) {
          // Straight into dx: a BLAS output may have a row stride (N here).
          at::mm_out(dx_tile, dx_left[b], right);
          if (x_coef.defined()) subtract_scaled_x(dx_tile, xt(), x_coef);
        } else {
          at::Tensor sum = at::mm(dx_left[b], right);
          if (x_coef.defined()) subtract_scaled_x(sum, xt(), x_coef);
          dx_tile.copy_(sum);
        }
      }
      if (dw.defined()) {
        if (widened) {
          dw.addmm_(ds, xt().t());
        } else {
          add_widened(dw, at::mm(ds_p.defined() ? ds_p : ds.to(prod), xt().t()));
        }
      }
      if (cdw.defined()) {
        if (widened) {
          cdw.addmm_(cls_rows, xt().t());
        } else {
          add_widened(cdw, at::mm(cls_rows, xt().t()));
        }
      }
    }
  });
  // Weight gradients: summed over chunks (and images for a shared weight),
  // always in the same order.
  if (need_dw) {
    const bool shared = grads.weight.dim() == 2;
    grads.dw.copy_(shared ? sum_in_order(dw_part.flatten(0, 1), 0) : sum_in_order(dw_part, 1));
  }
  if (need_db) grads.db.copy_(sum_in_order(db_part.flatten(0, 1), 0));
  if (cls_dw) cls.dw.copy_(sum_in_order(cls_dw_part, 1));
}

}  // namespace condnet::cpu
