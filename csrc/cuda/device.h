#pragma once
// What the CUDA ops need to know about a GPU, read once per device and cached: its limits for
// launch selection (common/launch.h), its name and compute capability for error messages. Plain
// host code (cuda/device.cpp), shared by every .cu file through cuda/launch.cuh.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>

#include <memory>
#include <string>

#include "../common/launch.h"

namespace gscnn {
namespace cuda {

struct DeviceInfo {
  DeviceLimits limits;
  std::string name;
  int major, minor;
};

// Cached per device (thread-safe).
const DeviceInfo& device_info(int device);

// The architectures this library was compiled for, as nvcc was told (e.g. "sm_90, compute_90").
std::string built_architectures();

// The error for a GPU that this build has neither machine code nor PTX for: names the GPU, its
// compute capability, the architectures built and the rebuild command.
[[noreturn]] void raise_no_kernel_image(int device, const char* op);

// A guard on t's device when t is a CUDA tensor; when it is not (mixed devices), nothing, and the
// op's argument checks report the mix.
inline std::unique_ptr<c10::cuda::CUDAGuard> guard_device_of(const at::Tensor& t) {
  return t.defined() && t.is_cuda() ? std::make_unique<c10::cuda::CUDAGuard>(t.device()) : nullptr;
}

}  // namespace cuda
}  // namespace gscnn
