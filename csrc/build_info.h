#pragma once

#include <string>

namespace condnet {

// "cuda=0" without CUDA sources, else "cuda=1;cuda_version=...;cuda_archs=...".
std::string cuda_build_info();

}  // namespace condnet
