#pragma once
// The host side of every gated_conv2d implementation (fast CPU kernels, CUDA kernels, CPU
// emulation of the CUDA kernels): argument checks, output allocation in the input's layout,
// contiguous weights, dtype dispatch and gate construction. Each implementation supplies only a
// `launch` callback that runs its kernel.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "gated_conv2d_checks.h"
#include "gated_conv2d_grads.h"
#include "gated_conv2d_math.h"

namespace gscnn {

inline at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// Forward of gated_conv2d (no hidden layer) and gated_conv2d_mlp (hidden layer given).
// launch(gate, z, s, r, weight, bias, out, alpha) runs the kernel for a non-empty input;
// `gate` is a gcl::LinearGate or gcl::MlpGate whose weight_type is the dtype.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> run_gated_conv2d_forward(
    const char* op, const at::Tensor& s, const at::Tensor& r,
    const std::optional<at::Tensor>& hidden_weight, const std::optional<at::Tensor>& hidden_bias,
    const at::Tensor& gate_weight, const at::Tensor& gate_bias, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, Launch&& launch) {
  const GclSizes z = check_gated_conv2d(op, s, r, hidden_weight, hidden_bias, gate_weight,
                                        gate_bias, weight, bias);
  const auto opts = s.options().memory_format(output_memory_format(s));
  auto out = at::empty({z.N, z.Cout, z.H, z.W}, opts);
  auto alpha = at::empty({z.N, 1, z.H, z.W}, opts);
  if (z.pixels() == 0) return {out, alpha};
  const auto hw = contiguous_or_undefined(hidden_weight), hb = contiguous_or_undefined(hidden_bias);
  const auto gw = gate_weight.contiguous(), gb = gate_bias.contiguous(), w = weight.contiguous();
  const auto b = contiguous_or_undefined(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "gated_conv2d", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (hw.defined()) {
      launch(gcl::MlpGate<acc_t, scalar_t>{hw.const_data_ptr<scalar_t>(),
                                           hb.const_data_ptr<scalar_t>(),
                                           gw.const_data_ptr<scalar_t>(),
                                           gb.const_data_ptr<scalar_t>(), z.M},
             z, s, r, w, b, out, alpha);
    } else {
      launch(gcl::LinearGate<acc_t, scalar_t>{gw.const_data_ptr<scalar_t>(),
                                              gb.const_data_ptr<scalar_t>()},
             z, s, r, w, b, out, alpha);
    }
  });
  return {out, alpha};
}

using BackwardResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Backward of gated_conv2d. launch(scalar_tag, z, grad_out, grad_alpha, s, r, gate_weight,
// gate_bias, weight, grad_s, grad_r) runs the kernel for a non-empty input and returns its
// partial sums, (rows, GradLayout.size()) in the accumulation dtype; scalar_tag is a null
// scalar_t pointer naming the dtype.
template <typename Launch>
BackwardResult run_gated_conv2d_backward(const char* op, const at::Tensor& grad_out,
                                         const std::optional<at::Tensor>& grad_alpha,
                                         const at::Tensor& s, const at::Tensor& r,
                                         const at::Tensor& gate_weight,
                                         const at::Tensor& gate_bias, const at::Tensor& weight,
                                         Launch&& launch) {
  const GclSizes z = check_gated_conv2d(op, s, r, std::nullopt, std::nullopt, gate_weight,
                                        gate_bias, weight, std::nullopt);
  check_gated_conv2d_grads(op, z, s, grad_out, grad_alpha);
  auto grad_s = at::empty(s.sizes(), s.options().memory_format(output_memory_format(s)));
  auto grad_r = at::empty(r.sizes(), r.options().memory_format(output_memory_format(r)));
  const gcl::GradLayout layout{z.C, z.Cr, z.Cout};
  at::Tensor partials;
  if (z.pixels() == 0) {  // empty input: every parameter gradient is zero
    partials = at::zeros({1, layout.size()}, s.options().dtype(at::toOpMathType(s.scalar_type())));
  } else {
    const auto gw = gate_weight.contiguous(), gb = gate_bias.contiguous(), w = weight.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "gated_conv2d_backward", [&] {
      partials = launch(static_cast<scalar_t*>(nullptr), z, grad_out,
                        grad_alpha.has_value() ? *grad_alpha : at::Tensor(), s, r, gw, gb, w,
                        grad_s, grad_r);
    });
  }
  auto [grad_gw, grad_gb, grad_w, grad_b] = parameter_grads(partials, layout, s.scalar_type());
  return {grad_s, grad_r, grad_gw, grad_gb, grad_w, grad_b};
}

}  // namespace gscnn
