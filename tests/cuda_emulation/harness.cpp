// The CUDA ops of csrc/cuda compiled for the host emulation (see
// csrc/cuda/emulate/host_shim.h) and exposed as plain functions on CPU
// tensors, for tests/test_ops_cuda_emulated.py.
#define CONDNET_EMULATE 1

#include <torch/extension.h>

#include "../../csrc/cuda/class_pool.cu"
#include "../../csrc/cuda/dynamic_classify.cu"
#include "../../csrc/cuda/project.cu"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("class_pool", condnet::cuda::class_pool_forward);
  m.def("class_pool_backward", condnet::cuda::class_pool_backward, py::arg("grad_guide_logits"),
        py::arg("grad_class_feats"), py::arg("x"), py::arg("guide_weight"), py::arg("guide_logits"),
        py::arg("output_mask"), py::arg("grad_logits") = py::none(),
        py::arg("classifier_weight") = py::none());
  m.def("dynamic_classify", condnet::cuda::dynamic_classify_forward);
  m.def("dynamic_classify_backward", condnet::cuda::dynamic_classify_backward);
  m.def("project", condnet::cuda::project_forward);
  m.def("project_backward", condnet::cuda::project_backward);
}
