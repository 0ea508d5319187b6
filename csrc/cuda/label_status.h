#pragma once
// The CUDA side of common/label_errors.h: per device, the status words in device memory that
// kernels fold bad labels into, and their mirror in pinned host memory that the host reads
// without synchronising.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common/label_errors.h"

namespace gscnn {
namespace cuda {

// Before a kernel that records into `slot`: raises the error an earlier call recorded and the
// mirror already shows (no wait: what the device has not copied yet is seen by a later call),
// and remembers num_classes and ignore_index for this call's message. Returns the slot's
// device word for the kernel. The first call on a device allocates the words: it must not be
// inside a CUDA graph capture (run the op once before capturing, as for any warm-up).
uint64_t* label_status_begin(int device, labels::Slot slot, const char* op, const char* arg,
                             int64_t num_classes, int64_t ignore_index);

// After the kernel: queues the copy of the slot's word to its mirror on `stream` (graph-safe).
void label_status_publish(int device, labels::Slot slot, cudaStream_t stream);

}  // namespace cuda
}  // namespace gscnn
