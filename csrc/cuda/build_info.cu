// What the CUDA half of the extension was compiled for, read from the
// compiler itself rather than from the build script's environment.
#include <cuda_runtime_api.h>

#include <string>

#include "../build_info.h"

#define CONDNET_STR_(...) #__VA_ARGS__
#define CONDNET_STR(...) CONDNET_STR_(__VA_ARGS__)

namespace condnet {

std::string cuda_build_info() {
  std::string info = "cuda=1;cuda_version=" + std::to_string(CUDART_VERSION / 1000) + "." +
                     std::to_string((CUDART_VERSION % 1000) / 10);
#ifdef __CUDA_ARCH_LIST__
  info += ";cuda_archs=" CONDNET_STR(__CUDA_ARCH_LIST__);
#endif
  return info;
}

}  // namespace condnet
