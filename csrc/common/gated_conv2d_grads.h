#pragma once
// Turns the per-block partial sums of the backward pass into the parameter gradients (host side,
// shared by the CPU and CUDA kernels).

#include <ATen/core/Tensor.h>

#include <tuple>

#include "gated_conv2d_math.h"

namespace gscnn {

// partials: (rows, layout.size()) in the accumulation dtype. Rows are summed in order (the
// reduction over dim 0 of a small matrix is deterministic on both devices), then each gradient is
// cut out and cast to `dtype`. Clones keep the outputs from aliasing one another.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> parameter_grads(
    const at::Tensor& partials, const gcl::GradLayout& layout, at::ScalarType dtype) {
  const auto total = partials.sum(0).to(dtype);
  const int64_t D = layout.C + layout.Cr;
  return {total.narrow(0, layout.gate_weight_offset(), D).view({1, D, 1, 1}).clone(),
          total.narrow(0, layout.gate_bias_offset(), 1).clone(),
          total.narrow(0, layout.weight_offset(), layout.Cout * layout.C)
              .view({layout.Cout, layout.C, 1, 1})
              .clone(),
          total.narrow(0, layout.bias_offset(), layout.Cout).clone()};
}

}  // namespace gscnn
