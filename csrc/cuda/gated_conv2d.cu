// CUDA gated_conv2d, gated_conv2d_mlp and gated_conv2d_backward: the block programs of
// common/gated_conv2d_program.h launched by cuda/launch.cuh with the launches that
// common/gated_conv2d_launch.h selects (the emulator of the tests runs the same programs with the
// same selection).
//
// Forward: one thread per pixel, its input channels staged in a shared-memory column (read from
// global memory where used for layers too wide to stage), nothing of size N*C*H*W written besides
// the output. Backward: each block walks a fixed set of pixel tiles, computes ds and dr per
// pixel, and reduces the parameter gradients of its tiles into its own row of partial sums, in a
// fixed order; rows are summed afterwards. No atomics: bitwise reproducible.

#include <torch/library.h>

#include "../common/gated_conv2d_launch.h"
#include "launch.cuh"

namespace gscnn {
namespace {

constexpr const char* kForwardOp = "gscnn_ops.gated_conv2d";
constexpr const char* kMlpOp = "gscnn_ops.gated_conv2d_mlp";
constexpr const char* kBackwardOp = "gscnn_ops.gated_conv2d_backward";

std::tuple<at::Tensor, at::Tensor> gated_conv2d_cuda(const at::Tensor& s, const at::Tensor& r,
                                                     const at::Tensor& gate_weight,
                                                     const at::Tensor& gate_bias,
                                                     const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias) {
  const auto guard = cuda::guard_device_of(s);
  cuda::Device device;
  return run_gated_conv2d_forward(kForwardOp, s, r, std::nullopt, std::nullopt, gate_weight,
                                  gate_bias, weight, bias,
                                  program_forward_kernel(kForwardOp, device));
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_mlp_cuda(
    const at::Tensor& s, const at::Tensor& r, const at::Tensor& hidden_weight,
    const at::Tensor& hidden_bias, const at::Tensor& gate_weight, const at::Tensor& gate_bias,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto guard = cuda::guard_device_of(s);
  cuda::Device device;
  return run_gated_conv2d_forward(kMlpOp, s, r, hidden_weight, hidden_bias, gate_weight, gate_bias,
                                  weight, bias, program_forward_kernel(kMlpOp, device));
}

BackwardResult gated_conv2d_backward_cuda(const at::Tensor& grad_out,
                                          const std::optional<at::Tensor>& grad_alpha,
                                          const at::Tensor& s, const at::Tensor& r,
                                          const at::Tensor& gate_weight,
                                          const at::Tensor& gate_bias, const at::Tensor& weight) {
  const auto guard = cuda::guard_device_of(s);
  cuda::Device device;
  return run_gated_conv2d_backward(kBackwardOp, grad_out, grad_alpha, s, r, gate_weight,
                                   gate_bias, weight, program_backward_kernel(kBackwardOp, device));
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("gated_conv2d", &gated_conv2d_cuda);
  m.impl("gated_conv2d_mlp", &gated_conv2d_mlp_cuda);
  m.impl("gated_conv2d_backward", &gated_conv2d_backward_cuda);
}

}  // namespace gscnn
