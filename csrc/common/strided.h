#pragma once
// A strided (N, C, H, W) tensor as the kernels see it: a pointer, the channel stride, and the
// pixel indexer. Built on the host from an at::Tensor, passed by value into CUDA kernels.

#include <ATen/core/Tensor.h>

#include "gated_conv2d_math.h"

namespace gscnn {

template <typename T>
struct Strided4d {
  T* data;
  int64_t sC;
  gcl::PixelIndexer px;
  GSCNN_HD T& at(int64_t pixel_offset, int64_t c) const { return data[pixel_offset + c * sC]; }
};

template <typename T>
Strided4d<T> strided4d(const at::Tensor& t) {
  return Strided4d<T>{static_cast<T*>(t.data_ptr()), t.stride(1),
                      gcl::PixelIndexer{t.size(2) * t.size(3), t.size(3), t.stride(0),
                                        t.stride(2), t.stride(3)}};
}

}  // namespace gscnn
