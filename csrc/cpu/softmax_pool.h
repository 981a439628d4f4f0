// The softmax pooling that class_pool and context_pool share on the CPU, and
// the one backward pass over x that also serves the classifiers' gradients
// (class_pool's dynamic-classifier term, cosine_classify's backward):
//
//   g = W x + b,  P = softmax_K(g),  sums = P x^T,  mass = sum_n P
//
// class_pool divides the sums by the pixel count, context_pool by the mass.
// Each direction walks x once, tile by tile (tiling.h), so the (B, K, N)
// softmax map is never materialised. The products run in product_type
// (products.h): 16-bit where the CPU multiplies 16-bit natively, else the
// accumulation dtype; the softmax and every sum across tiles in float32
// (double for double).
#pragma once

#include <ATen/ATen.h>

namespace condnet::cpu {

struct PooledSums {
  at::Tensor sums;  // (B, K, C) in the accumulation dtype
  at::Tensor mass;  // (B, K) in the accumulation dtype; undefined unless asked for
};

// x (B, C, N); weight (K, C), or (B, K, C) one per image; bias (K) or
// undefined. Fills g3 (B, K, N) with the logits.
PooledSums softmax_pool_forward(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& g3, bool with_mass);

// A per-image classifier of x, y[b] = w[b] x[b] (linear) or its cosine form
// y = <w[b, k], x_n> / r_n with r_n = max(x_norm_n, eps). Its dx term is
//
//   linear: sum_k w[k] dy[k, n]
//   cosine: sum_k w[k] dy[k, n] / r_n
//           - [x_norm_n >= eps] x_n (sum_k dy[k, n] y[k, n]) / (r_n x_norm_n)
//
// and its weight gradient dw[b, k] = sum_n dy[b, k, n] x_n (/ r_n for cosine).
struct ClassifierGradients {
  at::Tensor weight;       // (B, K2, C); undefined without a classifier
  at::Tensor grad_logits;  // (B, K2, N)
  // The cosine form only (undefined for the linear one):
  at::Tensor logits;  // (B, K2, N): y
  at::Tensor x_norm;  // (B, N), in the accumulation dtype
  double eps = 0.0;
  at::Tensor dw;  // (B, K2, C), or undefined where not wanted

  bool cosine() const { return x_norm.defined(); }
};

// What the backward pass reads and writes. With dP[k, n] = grad_sums[k] . x_n
// + grad_mass[k] (the pooled sums' and masses' gradients):
//
//   ds = P * (dP - sum_k P dP) + grad_logits
//   dx_n = W^T ds_n + sum_k grad_sums[k] P[k, n] + the classifier's term
//   dw = sum_n ds_n x_n^T (summed over the images for a (K, C) weight), db = sum_n ds_n
//
// The pooling's tensors are undefined where no gradient flows through it.
struct PoolGradients {
  at::Tensor x;            // (B, C, N)
  at::Tensor weight;       // (K, C) or (B, K, C)
  at::Tensor logits;       // (B, K, N): g
  at::Tensor grad_logits;  // (B, K, N) or undefined
  at::Tensor grad_sums;    // (B, K, C) in the accumulation dtype, or undefined
  at::Tensor grad_mass;    // (B, K) in the accumulation dtype, or undefined
  ClassifierGradients classifier;
  // The outputs, each undefined where not wanted; dw and db only with a pooling gradient.
  at::Tensor dx;  // (B, C, N)
  at::Tensor dw;  // weight's shape
  at::Tensor db;  // (K)
};

void pool_backward(const PoolGradients& grads);

}  // namespace condnet::cpu
