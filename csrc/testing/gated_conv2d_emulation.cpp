// gated_conv2d, gated_conv2d_mlp and gated_conv2d_backward on the emulated GPU: the op bodies of
// common/gated_conv2d_launch.h with the programs of common/gated_conv2d_program.h, exactly as
// cuda/gated_conv2d.cu runs them.

#include <torch/library.h>

#include "../common/gated_conv2d_launch.h"
#include "emulated_device.h"

namespace gscnn {
namespace testing {
namespace {

constexpr const char* kForwardOp = "gscnn_testing.gated_conv2d";
constexpr const char* kMlpOp = "gscnn_testing.gated_conv2d_mlp";
constexpr const char* kBackwardOp = "gscnn_testing.gated_conv2d_backward";

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& s, const at::Tensor& r,
                                           const at::Tensor& gate_weight,
                                           const at::Tensor& gate_bias, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias,
                                           std::vector<int64_t> gpu, std::vector<int64_t> force,
                                           int64_t skip_barrier) {
  EmulatedDevice device(gpu, force, skip_barrier);
  return run_gated_conv2d_forward(kForwardOp, s, r, std::nullopt, std::nullopt, gate_weight,
                                  gate_bias, weight, bias,
                                  program_forward_kernel(kForwardOp, device));
}

std::tuple<at::Tensor, at::Tensor> forward_mlp(
    const at::Tensor& s, const at::Tensor& r, const at::Tensor& hidden_weight,
    const at::Tensor& hidden_bias, const at::Tensor& gate_weight, const at::Tensor& gate_bias,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, std::vector<int64_t> gpu,
    std::vector<int64_t> force, int64_t skip_barrier) {
  EmulatedDevice device(gpu, force, skip_barrier);
  return run_gated_conv2d_forward(kMlpOp, s, r, hidden_weight, hidden_bias, gate_weight, gate_bias,
                                  weight, bias, program_forward_kernel(kMlpOp, device));
}

BackwardResult backward(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
                        const at::Tensor& s, const at::Tensor& r, const at::Tensor& gate_weight,
                        const at::Tensor& gate_bias, const at::Tensor& weight,
                        std::vector<int64_t> gpu, std::vector<int64_t> force,
                        int64_t skip_barrier) {
  EmulatedDevice device(gpu, force, skip_barrier);
  return run_gated_conv2d_backward(kBackwardOp, grad_out, grad_alpha, s, r, gate_weight,
                                   gate_bias, weight, program_backward_kernel(kBackwardOp, device));
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_testing, CPU, m) {
  m.impl("gated_conv2d", &forward);
  m.impl("gated_conv2d_mlp", &forward_mlp);
  m.impl("gated_conv2d_backward", &backward);
}

}  // namespace testing
}  // namespace gscnn
