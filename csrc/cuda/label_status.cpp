// Bad-label status words of the CUDA ops, and their pinned host mirrors (see label_status.h and
// common/label_errors.h for the protocol).

#include "label_status.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <mutex>
#include <string>

namespace gscnn {
namespace cuda {
namespace {

struct SlotCall {  // the latest call that used a slot, for the message
  const char* op = "gscnn_ops";
  const char* arg = "labels";
  int64_t num_classes = 0;
  int64_t ignore_index = 0;
};

struct DeviceStatus {
  uint64_t* words = nullptr;   // device memory, labels::kNumSlots words
  uint64_t* mirror = nullptr;  // pinned host memory, written by the device's copies
  SlotCall calls[labels::kNumSlots];
};

std::mutex g_mutex;
std::map<int, DeviceStatus> g_devices;  // for the life of the process

uint64_t read_mirror(const DeviceStatus& s, int slot) {
  return __atomic_load_n(s.mirror + slot, __ATOMIC_ACQUIRE);
}

DeviceStatus& status_of(int device) {  // g_mutex held
  auto it = g_devices.find(device);
  if (it != g_devices.end()) return it->second;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(c10::cuda::getCurrentCUDAStream(device), &capturing));
  TORCH_CHECK(capturing == cudaStreamCaptureStatusNone,
              "gscnn_ops: the first call of an op that checks labels on cuda:", device,
              " is being captured into a CUDA graph; run it once before capturing (a warm-up "
              "call allocates the status words it records bad labels into)");
  // Once per device and process (host sync allowed: first use, never in a captured graph).
  DeviceStatus s;
  const size_t bytes = labels::kNumSlots * sizeof(uint64_t);
  C10_CUDA_CHECK(cudaMalloc(&s.words, bytes));         // host sync allowed: first use
  C10_CUDA_CHECK(cudaMemset(s.words, 0xFF, bytes));    // host sync allowed: first use
  C10_CUDA_CHECK(cudaDeviceSynchronize());             // host sync allowed: first use
  C10_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&s.mirror), bytes,  // host sync allowed
                               cudaHostAllocPortable));
  for (int i = 0; i < labels::kNumSlots; ++i) s.mirror[i] = labels::kNoBadLabel;
  return g_devices.emplace(device, s).first->second;
}

// The error path (g_mutex held): wait for the device, so that every queued copy has landed and
// the mirror holds the first bad label of every call so far, clear the slot, raise.
[[noreturn]] void raise_slot(int device, DeviceStatus& s, int slot, const char* when) {
  C10_CUDA_CHECK(cudaDeviceSynchronize());                              // host sync allowed: error
  const uint64_t code = read_mirror(s, slot);
  C10_CUDA_CHECK(cudaMemset(s.words + slot, 0xFF, sizeof(uint64_t)));  // host sync allowed: error
  C10_CUDA_CHECK(cudaDeviceSynchronize());                              // host sync allowed: error
  __atomic_store_n(s.mirror + slot, labels::kNoBadLabel, __ATOMIC_RELEASE);
  const SlotCall& c = s.calls[slot];
  TORCH_CHECK(false, labels::describe(c.op, c.arg, code, c.num_classes, c.ignore_index),
              " (found on cuda:", device, " by ", when,
              "; CUDA ops report bad labels without waiting for the GPU, at their next call or "
              "at gscnn_ops.check_errors(); the result of the call that found it was made NaN "
              "where it can be)");
}

}  // namespace

uint64_t* label_status_begin(int device, labels::Slot slot, const char* op, const char* arg,
                             int64_t num_classes, int64_t ignore_index) {
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceStatus& s = status_of(device);
  if (read_mirror(s, slot) != labels::kNoBadLabel) {
    raise_slot(device, s, slot, "an earlier call of this op");
  }
  s.calls[slot] = SlotCall{op, arg, num_classes, ignore_index};
  return s.words + slot;
}

void label_status_publish(int device, labels::Slot slot, cudaStream_t stream) {
  uint64_t *word, *mirror;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    DeviceStatus& s = status_of(device);
    word = s.words + slot;
    mirror = s.mirror + slot;
  }
  C10_CUDA_CHECK(cudaMemcpyAsync(mirror, word, sizeof(uint64_t), cudaMemcpyDeviceToHost, stream));
}

}  // namespace cuda

void raise_pending_label_errors(int64_t device) {
  std::lock_guard<std::mutex> lock(cuda::g_mutex);
  auto it = cuda::g_devices.find(static_cast<int>(device));
  if (it == cuda::g_devices.end()) return;  // no op that checks labels ran on this device
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  C10_CUDA_CHECK(cudaDeviceSynchronize());  // host sync allowed: check_errors() waits on purpose
  for (int slot = 0; slot < labels::kNumSlots; ++slot) {
    if (cuda::read_mirror(it->second, slot) != labels::kNoBadLabel) {
      cuda::raise_slot(static_cast<int>(device), it->second, slot, "an earlier call");
    }
  }
}

}  // namespace gscnn
