// The op contract: every condnet op's schema, in one TORCH_LIBRARY block.
// Kernels live in cpu/ and cuda/, each registering its own dispatch key;
// autograd and fake (meta) kernels are registered from Python.
//
// The backward ops take output_mask = which of their gradients to compute;
// masked outputs come back undefined (None in Python), as with
// aten::native_layer_norm_backward.
//
// conditional_classifier is the whole classifier (class_pool, project,
// dynamic_classify) as one op, so that its backward is one op too and writes
// dx once (composite/conditional_classifier.cpp). Its extra outputs, the
// class features and theta, are what the backward needs. Its layout says how
// theta holds the per-image classifier: "per_class" or "grouped_conv" (the
// released model's grouped-conv storage; composite/theta_layout.h).
//
// CAC's ops: context_pool (static logits, class centres and masses),
// cosine_classify (the per-image cosine classifier; also returns the
// features' per-pixel norms, which its backward needs) and their backwards;
// context_pool_backward adds the cosine classifier's part of dx when
// grad_logits is given. context_aware_classifier and its backward, the whole
// CAC classifier, have no C++ kernel: condnet/ops/registration.py registers
// the Python composite over the four primitives (condnet/ops/context_composite.py)
// as their CompositeExplicitAutograd kernel.
#include <torch/headeronly/version.h>
#include <torch/library.h>

#include <string>

#include "build_info.h"

namespace condnet {

// "key=value;..." pairs; condnet.ops.build_info() parses them into a dict.
std::string build_info() {
  std::string info = "torch=" TORCH_VERSION ";cpu=1;";
  // Whether at::parallel_for (inlined from ATen's headers) runs on threads here.
#ifdef _OPENMP
  info.append("openmp=1;");
#else
  info.append("openmp=0;");
#endif
  info.append(cuda_build_info());
  return info;
}

}  // namespace condnet

TORCH_LIBRARY(condnet, m) {
  m.def("class_pool(Tensor x, Tensor guide_weight, Tensor? guide_bias) -> (Tensor, Tensor)");
  m.def(
      "class_pool_backward(Tensor? grad_guide_logits, Tensor? grad_class_feats, Tensor x, "
      "Tensor guide_weight, Tensor guide_logits, bool[3] output_mask, Tensor? grad_logits=None, "
      "Tensor? classifier_weight=None) -> (Tensor, Tensor, Tensor)");
  m.def("dynamic_classify(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def(
      "dynamic_classify_backward(Tensor grad_logits, Tensor x, Tensor weight, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");
  m.def("project(Tensor class_feats, Tensor weight, Tensor? bias) -> Tensor");
  m.def(
      "project_backward(Tensor grad_theta, Tensor class_feats, Tensor weight, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "conditional_classifier(Tensor x, Tensor guide_weight, Tensor? guide_bias, "
      "Tensor proj_weight, Tensor? proj_bias, str layout) "
      "-> (Tensor logits, Tensor guide_logits, Tensor class_feats, Tensor theta)");
  m.def(
      "conditional_classifier_backward(Tensor? grad_logits, Tensor? grad_guide_logits, "
      "Tensor? grad_class_feats, Tensor? grad_theta, Tensor x, Tensor guide_weight, "
      "Tensor guide_logits, Tensor class_feats, Tensor proj_weight, Tensor theta, str layout, "
      "bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "context_pool(Tensor x, Tensor guide_weight, Tensor? guide_bias) "
      "-> (Tensor guide_logits, Tensor centres, Tensor mass)");
  m.def(
      "context_pool_backward(Tensor? grad_guide_logits, Tensor? grad_centres, Tensor? grad_mass, "
      "Tensor x, Tensor guide_weight, Tensor guide_logits, Tensor centres, Tensor mass, "
      "bool[3] output_mask, Tensor? grad_logits=None, Tensor? classifier=None, "
      "Tensor? logits=None, Tensor? x_norm=None, float eps=0.) -> (Tensor, Tensor, Tensor)");
  m.def("cosine_classify(Tensor x, Tensor weight, float eps) -> (Tensor logits, Tensor x_norm)");
  m.def(
      "cosine_classify_backward(Tensor grad_logits, Tensor x, Tensor weight, Tensor logits, "
      "Tensor x_norm, float eps, bool[2] output_mask) -> (Tensor, Tensor)");
  m.def(
      "context_aware_classifier(Tensor x, Tensor guide_weight, Tensor? guide_bias, "
      "Tensor class_weight, Tensor proj_in_weight, Tensor proj_out_weight, "
      "Tensor? proj_out_bias, float scale, float eps) -> (Tensor logits, Tensor guide_logits, "
      "Tensor centres, Tensor mass, Tensor classifier, Tensor x_norm)");
  m.def(
      "context_aware_classifier_backward(Tensor? grad_logits, Tensor? grad_guide_logits, "
      "Tensor x, Tensor guide_weight, Tensor guide_logits, Tensor centres, Tensor mass, "
      "Tensor class_weight, Tensor proj_in_weight, Tensor proj_out_weight, "
      "Tensor? proj_out_bias, Tensor logits, Tensor classifier, Tensor x_norm, float scale, "
      "float eps, bool[7] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("build_info() -> str", &condnet::build_info);
}
