#pragma once
// Argument validation of the gated_conv2d ops (identical on every device).

#include <optional>

#include "checks.h"

namespace gscnn {

struct GclSizes {
  int64_t N, C, Cr, Cout, H, W;
  int64_t M;  // hidden width of the MLP gate; 0 for the linear gate
  int64_t D() const { return C + Cr; }
  int64_t pixels() const { return N * H * W; }
};

// Checks s, r, the gate parameters (hidden layer only for the MLP gate), weight and bias.
inline GclSizes check_gated_conv2d(const char* op, const at::Tensor& s, const at::Tensor& r,
                                   const std::optional<at::Tensor>& hidden_weight,
                                   const std::optional<at::Tensor>& hidden_bias,
                                   const at::Tensor& gate_weight, const at::Tensor& gate_bias,
                                   const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  check_dim(op, "s", s, 4, "(N, C, H, W)");
  check_dim(op, "r", r, 4, "(N, Cr, H, W)");
  check_floating(op, "s", s);
  check_same_dtype_device(op, "s", s, "r", r);
  check_same_dtype_device(op, "s", s, "gate_weight", gate_weight);
  check_same_dtype_device(op, "s", s, "gate_bias", gate_bias);
  check_same_dtype_device(op, "s", s, "weight", weight);

  GclSizes z{s.size(0), s.size(1), r.size(1), 0, s.size(2), s.size(3), 0};
  TORCH_CHECK(z.C > 0, op, ": argument 's' must have at least one channel, got shape ", s.sizes());
  TORCH_CHECK(z.Cr > 0, op, ": argument 'r' must have at least one channel, got shape ",
              r.sizes());
  TORCH_CHECK(r.size(0) == z.N && r.size(2) == z.H && r.size(3) == z.W, op,
              ": arguments 's' and 'r' must have the same batch size and spatial size, got s ",
              s.sizes(), " and r ", r.sizes());

  check_dim(op, "weight", weight, 4, "(C_out, C, 1, 1)");
  z.Cout = weight.size(0);
  TORCH_CHECK(z.Cout > 0, op, ": argument 'weight' must have at least one output channel, got ",
              weight.sizes());
  check_shape(op, "weight", weight, {z.Cout, z.C, 1, 1});
  if (bias.has_value() && bias->defined()) {
    check_same_dtype_device(op, "s", s, "bias", *bias);
    check_shape(op, "bias", *bias, {z.Cout});
  }

  if (hidden_weight.has_value()) {
    TORCH_CHECK(hidden_bias.has_value(), op, ": argument 'hidden_bias' is required");
    check_same_dtype_device(op, "s", s, "hidden_weight", *hidden_weight);
    check_same_dtype_device(op, "s", s, "hidden_bias", *hidden_bias);
    check_dim(op, "hidden_weight", *hidden_weight, 4, "(M, C + Cr, 1, 1)");
    z.M = hidden_weight->size(0);
    TORCH_CHECK(z.M > 0, op, ": argument 'hidden_weight' must have at least one row, got ",
                hidden_weight->sizes());
    check_shape(op, "hidden_weight", *hidden_weight, {z.M, z.D(), 1, 1});
    check_shape(op, "hidden_bias", *hidden_bias, {z.M});
    check_shape(op, "gate_weight", gate_weight, {1, z.M, 1, 1});
  } else {
    check_shape(op, "gate_weight", gate_weight, {1, z.D(), 1, 1});
  }
  check_shape(op, "gate_bias", gate_bias, {1});
  return z;
}

// Backward: grad_out is (N, C_out, H, W); grad_alpha, when given, is (N, 1, H, W).
inline void check_gated_conv2d_grads(const char* op, const GclSizes& z, const at::Tensor& s,
                                     const at::Tensor& grad_out,
                                     const std::optional<at::Tensor>& grad_alpha) {
  check_same_dtype_device(op, "s", s, "grad_out", grad_out);
  check_shape(op, "grad_out", grad_out, {z.N, z.Cout, z.H, z.W});
  if (grad_alpha.has_value()) {
    check_same_dtype_device(op, "s", s, "grad_alpha", *grad_alpha);
    check_shape(op, "grad_alpha", *grad_alpha, {z.N, 1, z.H, z.W});
  }
}

}  // namespace gscnn
