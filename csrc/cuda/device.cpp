// Device properties and the "no kernel image for this GPU" error (see device.h).

#include "device.h"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <sstream>

namespace gscnn {
namespace cuda {

const DeviceInfo& device_info(int device) {
  static std::mutex mu;
  static std::map<int, DeviceInfo> cache;  // node-based: references stay valid
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  cudaDeviceProp p{};
  C10_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceInfo info{DeviceLimits{p.multiProcessorCount, p.maxThreadsPerMultiProcessor,
                               p.maxBlocksPerMultiProcessor, p.regsPerMultiprocessor,
                               static_cast<int64_t>(p.sharedMemPerBlock),
                               static_cast<int64_t>(p.sharedMemPerBlockOptin),
                               static_cast<int64_t>(p.sharedMemPerMultiprocessor),
                               static_cast<int64_t>(p.reservedSharedMemPerBlock)},
                  p.name, p.major, p.minor};
  return cache.emplace(device, std::move(info)).first->second;
}

std::string built_architectures() {
#if defined(GSCNN_CUDA_ARCHS)
  // setup.py passes the list as one preprocessor token, e.g. sm_75__sm_90__compute_90.
#define GSCNN_STRINGIFY_(x) #x
#define GSCNN_STRINGIFY(x) GSCNN_STRINGIFY_(x)
  std::string s = GSCNN_STRINGIFY(GSCNN_CUDA_ARCHS);
  for (size_t i; (i = s.find("__")) != std::string::npos;) s.replace(i, 2, ", ");
  return s;
#else
  return "(unknown: built without setup.py's architecture list)";
#endif
}

void raise_no_kernel_image(int device, const char* op) {
  const DeviceInfo& d = device_info(device);
  std::ostringstream m;
  m << op << ": this build of gscnn_ops has no kernel for GPU " << device << ", " << d.name
    << " (compute capability " << d.major << "." << d.minor << "): it holds machine code or PTX "
    << "for " << built_architectures() << " only (machine code runs on GPUs of the same major "
    << "version and an equal or higher minor one; PTX on any GPU of an equal or higher compute "
    << "capability). Rebuild it for this GPU from the source folder:\n    TORCH_CUDA_ARCH_LIST=\""
    << d.major << "." << d.minor << "\" FORCE_CUDA=1 pip install --no-build-isolation "
    << "--force-reinstall --no-deps .\n(`gscnn info` lists the architectures of a build.)";
  TORCH_CHECK(false, m.str());
}

}  // namespace cuda
}  // namespace gscnn
