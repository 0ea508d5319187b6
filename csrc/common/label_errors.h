#pragma once
// Bad labels found by a kernel, reported without a host synchronisation on the GPU.
//
// Ops that read label maps (dual_task_loss, boundary_fscore_counts) check every label where the
// kernel already loads it: a label that is neither a class index in [0, K) nor ignore_index is
// encoded with its position into one 64-bit word and folded into a status word with an atomic
// min, so the status ends up holding the *first* bad label in (n, y, x) order whatever the launch
// or thread schedule. There is no extra pass over the labels and, on the GPU, no host sync:
//   CPU   the op reads its status word right after the kernel and raises at once;
//   CUDA  the status word lives in device memory; after the kernel the op queues an asynchronous
//         copy of it to pinned host memory (a mirror), which the host reads without waiting. The
//         next call of the op on that device raises the error if the mirror holds one, and
//         gscnn_ops.check_errors() synchronises and raises it at once. The call that saw the bad
//         label also poisons its own result (a NaN loss) so that nothing silently wrong comes out
//         in the meantime. (csrc/cuda/label_status.cpp)
//
// The word: n, y, x and the label in 16 bits each, most significant first, so that the unsigned
// minimum is the first bad pixel in (n, y, x) order. Positions from 65535 on and labels outside
// [-32766, 32767] saturate (the message then says ">= 65535", ">= 32768" or "<= -32767"); labels
// that large are not class indices anyway.

#include <c10/util/Exception.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "device_intrinsics.h"
#include "host_device.h"

namespace gscnn {
namespace labels {

constexpr uint64_t kNoBadLabel = ~uint64_t(0);  // the identity of the minimum
constexpr int64_t kFieldMax = 0xFFFF;           // a saturated field
constexpr int64_t kValueOffset = 0x7FFF;        // value v is stored as v + kValueOffset

GSCNN_HD uint64_t clamp_field(int64_t v) {
  return static_cast<uint64_t>(v < 0 ? 0 : (v > kFieldMax ? kFieldMax : v));
}

GSCNN_HD uint64_t encode(int64_t n, int64_t y, int64_t x, int64_t value) {
  return (clamp_field(n) << 48) | (clamp_field(y) << 32) | (clamp_field(x) << 16) |
         clamp_field(value + kValueOffset);
}

// Records a bad label into the status word (GPU: atomicMin; CPU: a compare-and-swap loop).
GSCNN_HD void record(uint64_t* status, int64_t n, int64_t y, int64_t x, int64_t value) {
  hd::atomic_min_u64(status, encode(n, y, x, value));
}

// The error message of a status word (code != kNoBadLabel): the op, the argument, the label and
// its position [n, y, x], and what was allowed.
inline std::string describe(const char* op, const char* arg, uint64_t code, int64_t num_classes,
                            int64_t ignore_index) {
  const int64_t fields[4] = {static_cast<int64_t>((code >> 48) & kFieldMax),
                             static_cast<int64_t>((code >> 32) & kFieldMax),
                             static_cast<int64_t>((code >> 16) & kFieldMax),
                             static_cast<int64_t>(code & kFieldMax)};
  std::ostringstream m;
  m << op << ": argument '" << arg << "' has label ";
  if (fields[3] == 0) {
    m << "<= " << -kValueOffset;
  } else if (fields[3] == kFieldMax) {
    m << ">= " << kFieldMax - kValueOffset;
  } else {
    m << fields[3] - kValueOffset;
  }
  m << " at [";
  for (int i = 0; i < 3; ++i) {
    m << (i ? ", " : "") << (fields[i] == kFieldMax ? ">= " : "") << fields[i];
  }
  m << "]; expected a class in [0, " << num_classes << ") or ignore_index " << ignore_index;
  return m.str();
}

// The CPU side: a status word on the stack, checked as soon as the kernel is done.
struct HostStatus {
  uint64_t word = kNoBadLabel;
  uint64_t* get() { return &word; }
  void raise_if_bad(const char* op, const char* arg, int64_t num_classes, int64_t ignore_index,
                    const char* note = "") const {
    TORCH_CHECK(word == kNoBadLabel, describe(op, arg, word, num_classes, ignore_index), note);
  }
};

// The label status of the devices that report at once (the CPU, the emulated GPU of the tests):
// the label_status_begin / _end of an op body's device.
struct HostLabelStatus {
  HostStatus status[3];  // one per Slot (below)
  template <typename Like>
  uint64_t* label_status_begin(int slot, const char*, const char*, int64_t, int64_t,
                               const Like&) {
    status[slot] = HostStatus{};
    return status[slot].get();
  }
  template <typename Like>
  void label_status_end(int slot, const char* op, const char* arg, int64_t num_classes,
                        int64_t ignore_index, const Like&) {
    status[slot].raise_if_bad(op, arg, num_classes, ignore_index);
  }
};

// The status words of the CUDA ops, one per (op, argument), per device.
enum Slot : int {
  kDualTaskLossTarget = 0,
  kBoundaryFscorePred = 1,
  kBoundaryFscoreTarget = 2,
  kNumSlots = 3,
};

}  // namespace labels

// Raises the bad labels that CUDA ops recorded on `device` and nobody reported yet, after
// waiting for the device (gscnn_ops.check_errors). A no-op in builds without CUDA.
void raise_pending_label_errors(int64_t device);

}  // namespace gscnn
