// Linked instead of cuda/build_info.cu when the extension is built without CUDA.
#include "build_info.h"

namespace condnet {

std::string cuda_build_info() { return "cuda=0"; }

}  // namespace condnet
