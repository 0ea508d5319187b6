#pragma once
// Input validation shared by every op and device. Each message names the op, the argument, what
// was expected and what came, so a user can fix the call without reading our code.

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <vector>

namespace gscnn {

inline void check_defined(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": argument '", name, "' is an undefined tensor");
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                      const char* layout) {
  check_defined(op, name, t);
  TORCH_CHECK(t.dim() == dim, op, ": argument '", name, "' must be a ", dim, "-D ", layout,
              " tensor, got a ", t.dim(), "-D tensor of shape ", t.sizes());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t,
                        std::vector<int64_t> expected) {
  check_defined(op, name, t);
  TORCH_CHECK(t.sizes().vec() == expected, op, ": argument '", name, "' must have shape ",
              at::IntArrayRef(expected), ", got ", t.sizes());
}

// Floating-point kernels: float32, float16 and bfloat16 everywhere, float64 on the CPU (for
// gradcheck). The CUDA kernels are compiled for float64 too but it is not a supported fast path.
inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble,
              op, ": argument '", name,
              "' must be a float32, float16, bfloat16 or float64 tensor, got ", st);
}

// Every tensor argument must match the first one in dtype and device.
inline void check_same_dtype_device(const char* op, const char* ref_name, const at::Tensor& ref,
                                    const char* name, const at::Tensor& t) {
  check_defined(op, name, t);
  TORCH_CHECK(t.device() == ref.device(), op, ": argument '", name, "' is on ", t.device(),
              " but '", ref_name, "' is on ", ref.device(), "; all tensors must be on one device");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": argument '", name, "' has dtype ",
              t.scalar_type(), " but '", ref_name, "' has dtype ", ref.scalar_type(),
              "; all tensors must have one dtype");
}

// The layout our kernels write: channels_last when the input is channels_last (and not also
// plain contiguous, as 1x1 images or single channels are), NCHW otherwise. The Python fake
// kernels apply the same rule so that torch.compile sees the real strides.
inline at::MemoryFormat output_memory_format(const at::Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

}  // namespace gscnn
