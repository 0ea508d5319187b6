// CPU gated_conv2d ops: argument handling (common/gated_conv2d_launch.h) and the choice of the
// kernel build for this processor (gated_conv2d_{baseline,avx2,avx512}.cpp, one source:
// gated_conv2d_kernels_impl.h).

#include <torch/library.h>

#include "../common/gated_conv2d_launch.h"
#include "gated_conv2d_kernels.h"

namespace gscnn {
namespace {

constexpr const char* kForwardOp = "gscnn_ops.gated_conv2d";
constexpr const char* kMlpOp = "gscnn_ops.gated_conv2d_mlp";
constexpr const char* kBackwardOp = "gscnn_ops.gated_conv2d_backward";

using cpu::cpu_isa;  // cpu_isa.h
using cpu::Isa;

auto forward_launch() {
  return [](const auto& gate, const GclSizes& z, const at::Tensor& s, const at::Tensor& r,
            const at::Tensor& weight, const at::Tensor& bias, at::Tensor& out, at::Tensor& alpha) {
    switch (cpu_isa()) {
#if defined(GSCNN_CPU_X86_VARIANTS)
      case Isa::avx512: return cpu::avx512::forward_kernel(gate, z, s, r, weight, bias, out, alpha);
      case Isa::avx2: return cpu::avx2::forward_kernel(gate, z, s, r, weight, bias, out, alpha);
#endif
      default: return cpu::baseline::forward_kernel(gate, z, s, r, weight, bias, out, alpha);
    }
  };
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_cpu(const at::Tensor& s, const at::Tensor& r,
                                                    const at::Tensor& gate_weight,
                                                    const at::Tensor& gate_bias,
                                                    const at::Tensor& weight,
                                                    const std::optional<at::Tensor>& bias) {
  return run_gated_conv2d_forward(kForwardOp, s, r, std::nullopt, std::nullopt, gate_weight,
                                  gate_bias, weight, bias, forward_launch());
}

std::tuple<at::Tensor, at::Tensor> gated_conv2d_mlp_cpu(
    const at::Tensor& s, const at::Tensor& r, const at::Tensor& hidden_weight,
    const at::Tensor& hidden_bias, const at::Tensor& gate_weight, const at::Tensor& gate_bias,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return run_gated_conv2d_forward(kMlpOp, s, r, hidden_weight, hidden_bias, gate_weight, gate_bias,
                                  weight, bias, forward_launch());
}

// ---------------------------------------------------------------------------------------------
// Backward (linear gate)

BackwardResult gated_conv2d_backward_cpu(const at::Tensor& grad_out,
                                         const std::optional<at::Tensor>& grad_alpha,
                                         const at::Tensor& s, const at::Tensor& r,
                                         const at::Tensor& gate_weight,
                                         const at::Tensor& gate_bias, const at::Tensor& weight) {
  return run_gated_conv2d_backward(
      kBackwardOp, grad_out, grad_alpha, s, r, gate_weight, gate_bias, weight,
      [&](auto scalar_tag, const GclSizes& z, const at::Tensor& g, const at::Tensor& ga,
          const at::Tensor& s_, const at::Tensor& r_, const at::Tensor& gw, const at::Tensor& gb,
          const at::Tensor& w, at::Tensor& ds, at::Tensor& dr) {
        using scalar_t = std::remove_pointer_t<decltype(scalar_tag)>;
        switch (cpu_isa()) {
#if defined(GSCNN_CPU_X86_VARIANTS)
          case Isa::avx512:
            return cpu::avx512::backward_kernel<scalar_t>(z, g, ga, s_, r_, gw, gb, w, ds, dr);
          case Isa::avx2:
            return cpu::avx2::backward_kernel<scalar_t>(z, g, ga, s_, r_, gw, gb, w, ds, dr);
#endif
          default:
            return cpu::baseline::backward_kernel<scalar_t>(z, g, ga, s_, r_, gw, gb, w, ds, dr);
        }
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("gated_conv2d", &gated_conv2d_cpu);
  m.impl("gated_conv2d_mlp", &gated_conv2d_mlp_cpu);
  m.impl("gated_conv2d_backward", &gated_conv2d_backward_cpu);
}

}  // namespace gscnn
