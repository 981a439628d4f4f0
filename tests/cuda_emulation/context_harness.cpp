// CAC's CUDA ops of csrc/cuda (context_pool, cosine_classify and their
// backwards) compiled for the host emulation (see
// csrc/cuda/emulate/host_shim.h) and exposed as plain functions on CPU
// tensors, for tests/test_ops_cuda_emulated_context.py.
#define CONDNET_EMULATE 1

#include <torch/extension.h>

#include "../../csrc/cuda/context_pool.cu"
#include "../../csrc/cuda/cosine_classify.cu"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("context_pool", condnet::cuda::context_pool_forward);
  m.def("context_pool_backward", condnet::cuda::context_pool_backward, py::arg("grad_guide_logits"),
        py::arg("grad_centres"), py::arg("grad_mass"), py::arg("x"), py::arg("guide_weight"),
        py::arg("guide_logits"), py::arg("centres"), py::arg("mass"), py::arg("output_mask"),
        py::arg("grad_logits") = py::none(), py::arg("classifier") = py::none(),
        py::arg("logits") = py::none(), py::arg("x_norm") = py::none(), py::arg("eps") = 0.0);
  m.def("cosine_classify", condnet::cuda::cosine_classify_forward);
  m.def("cosine_classify_backward", condnet::cuda::cosine_classify_backward);
}
