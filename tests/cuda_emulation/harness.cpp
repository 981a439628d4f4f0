// The CUDA ops of csrc/cuda compiled for the host emulation (see
// csrc/cuda/emulate/host_shim.h) and exposed as plain functions on CPU
// tensors, for tests/test_ops_cuda_emulated.py.
#define CONDNET_EMULATE 1

#include <torch/extension.h>

#include "../../csrc/cuda/class_pool.cu"
#include "../../csrc/cuda/dynamic_classify.cu"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("class_pool", &condnet::cuda::class_pool_forward);
  m.def("class_pool_backward", &condnet::cuda::class_pool_backward);
  m.def("dynamic_classify", &condnet::cuda::dynamic_classify_forward);
  m.def("dynamic_classify_backward", &condnet::cuda::dynamic_classify_backward);
}
