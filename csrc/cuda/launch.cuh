#pragma once
// The one CUDA kernel of the library, and how every op launches it.
//
// program_kernel<Program> runs a block program (common/exec.h) with the GPU policy: its body is
// the program, which the CPU emulator of the tests runs too. launch_program() is the shared
// launch helper of every op: the device guard is the op's; here the kernel's attributes are
// read and its shared-memory opt-in is set once per device (to the device's maximum, so that
// later launches on other host threads never run under a smaller limit), the op's launch
// selection is called with the cached device limits, the launch is checked against those
// limits, global scratch memory is allocated when the launch asks for it, and the kernel goes
// to the current stream with its launch checked.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "../common/exec.h"
#include "../common/launch.h"
#include "device.h"
#include "label_status.h"

namespace gscnn {
namespace cuda {

// The blocks per SM a program asks the compiler to leave room for (a kMinBlocks member; 1 by
// default): with kMaxThreads, what __launch_bounds__ caps the registers with.
template <typename Program>
constexpr int min_blocks() {
  if constexpr (requires { Program::kMinBlocks; }) {
    return Program::kMinBlocks;
  } else {
    return 1;
  }
}

// __grid_constant__: a program's member function that is called rather than inlined (a cold
// path, GSCNN_HD_COLD) takes the parameter's address; without it every thread would first copy
// the whole program (its taps: over 500 bytes) to its local memory. nvcc accepts it from
// compute_70 on; a build for an older GPU (an explicit TORCH_CUDA_ARCH_LIST) makes the copy.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#define GSCNN_GRID_CONSTANT
#else
#define GSCNN_GRID_CONSTANT __grid_constant__
#endif

// kScratch: the block's buffers live in global scratch memory (see GpuExec). Only programs that
// declare kGlobalScratch are instantiated that way.
template <typename Program, bool kScratch>
__global__ void __launch_bounds__(Program::kMaxThreads, min_blocks<Program>())
    program_kernel(const GSCNN_GRID_CONSTANT Program program, unsigned char* scratch,
                   int64_t scratch_bytes) {
  GpuExec<kScratch> ex{scratch, scratch_bytes};
  program(ex);
}

// Whether a program can run with its buffers in global scratch memory (a kGlobalScratch member
// set to true); the others get one kernel, for shared memory.
template <typename Program>
constexpr bool may_use_scratch() {
  if constexpr (requires { Program::kGlobalScratch; }) {
    return Program::kGlobalScratch;
  } else {
    return false;
  }
}

// The compiled kernel's registers and static shared memory on `device`, read once per device.
// The first call per device also raises the clear "no kernel for this GPU" error when the build
// has neither machine code nor PTX for it, and opts the kernel in to the device's maximum of
// dynamic shared memory.
template <typename Program, bool kScratch = false>
const KernelLimits& kernel_limits(int device, const char* op) {
  static std::mutex mu;
  static std::map<int, KernelLimits> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  const void* fn = reinterpret_cast<const void*>(&program_kernel<Program, kScratch>);
  cudaFuncAttributes a{};
  const cudaError_t err = cudaFuncGetAttributes(&a, fn);
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    (void)cudaGetLastError();  // not a sticky error: clear it before raising ours
    raise_no_kernel_image(device, op);
  }
  C10_CUDA_CHECK(err);
  const KernelLimits k{a.numRegs, a.maxThreadsPerBlock, static_cast<int64_t>(a.sharedSizeBytes)};
  const int64_t most = max_dynamic_shared(device_info(device).limits, k);
  C10_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(most)));
  return cache.emplace(device, k).first->second;
}

// Launches a block program on t's device: select(DeviceLimits, KernelLimits, LaunchOverride{})
// chooses the launch
// (a Launch, or an op's choice holding one as .launch), make(choice) builds the program.
template <typename Select, typename Make>
void launch_program(const char* op, const at::Tensor& t, Select&& select, Make&& make) {
  using Choice = std::decay_t<decltype(select(std::declval<const DeviceLimits&>(),
                                              std::declval<const KernelLimits&>(),
                                              std::declval<const LaunchOverride&>()))>;
  using Program = std::decay_t<decltype(make(std::declval<const Choice&>()))>;
  const int device = t.get_device();
  const DeviceLimits& d = device_info(device).limits;
  const KernelLimits& k = kernel_limits<Program>(device, op);
  const Choice choice = select(d, k, LaunchOverride{});
  const Launch& l = launch_of(choice);
  const std::string problem = launch_problem(l, d, k);
  TORCH_CHECK(problem.empty(), op, ": internal error: the launch chosen for this input needs ",
              problem);
  const Program program = make(choice);
  const auto stream = c10::cuda::getCurrentCUDAStream(device);
  const dim3 grid(static_cast<unsigned>(l.blocks)), block(static_cast<unsigned>(l.threads));
  if constexpr (may_use_scratch<Program>()) {
    if (l.uses_scratch()) {
      // The scratch kernel's own attributes (read and opted in once per device too); its
      // registers differ a little, its __launch_bounds__ do not.
      (void)kernel_limits<Program, true>(device, op);
      at::Tensor scratch =
          at::empty({l.blocks * l.scratch_bytes_per_block}, t.options().dtype(at::kByte));
      program_kernel<Program, true><<<grid, block, 0, stream>>>(
          program, scratch.data_ptr<uint8_t>(), l.scratch_bytes_per_block);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  TORCH_CHECK(!l.uses_scratch(), op, ": internal error: global scratch memory chosen for a "
              "program without a scratch kernel");
  program_kernel<Program, false><<<grid, block, static_cast<size_t>(l.shared_bytes), stream>>>(
      program, nullptr, 0);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The device object of the ops' program callbacks (see e.g. program_forward_kernel in
// common/gated_conv2d_launch.h); the emulator of the tests has the same interface.
struct Device {
  template <typename Select, typename Make>
  void run(const char* op, const at::Tensor& like, Select&& select, Make&& make) {
    launch_program(op, like, std::forward<Select>(select), std::forward<Make>(make));
  }
  // Bad labels (common/label_errors.h): raise what an earlier call found, hand the kernel the
  // device's status word; afterwards queue its copy to the host mirror. No synchronisation.
  uint64_t* label_status_begin(labels::Slot slot, const char* op, const char* arg,
                               int64_t num_classes, int64_t ignore_index, const at::Tensor& like) {
    return cuda::label_status_begin(like.get_device(), slot, op, arg, num_classes, ignore_index);
  }
  void label_status_end(labels::Slot slot, const char*, const char*, int64_t, int64_t,
                        const at::Tensor& like) {
    label_status_publish(like.get_device(), slot,
                         c10::cuda::getCurrentCUDAStream(like.get_device()).stream());
  }
};

}  // namespace cuda
}  // namespace gscnn
