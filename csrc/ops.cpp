// Every schema of the gscnn_ops library, in one place. Device kernels register against these in
// cpu/ and cuda/ (TORCH_LIBRARY_IMPL); fake kernels and autograd are registered from Python
// (gscnn_ops/ops/<op>.py, beside each op's Python wrapper).

#include <torch/library.h>

#include "common/label_errors.h"
#include "cpu/cpu_isa.h"

#if defined(GSCNN_OPS_PYTHON_MODULE)
#include <Python.h>

// `import gscnn_ops._C` loads this library, which runs the registrations below. The module itself
// is empty: every op is reached through torch.ops.gscnn_ops.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif

#if !defined(GSCNN_WITH_CUDA)
namespace gscnn {
void raise_pending_label_errors(int64_t) {}  // no CUDA kernels: nothing is ever pending
}  // namespace gscnn
#endif

TORCH_LIBRARY(gscnn_ops, m) {
  // Gated Convolutional Layer, linear gate (paper eq. 1-2):
  //   alpha = sigmoid(gate_weight . [s || r] + gate_bias),  out = weight * (s * (1 + alpha)) + bias
  m.def(
      "gated_conv2d(Tensor s, Tensor r, Tensor gate_weight, Tensor gate_bias, Tensor weight, "
      "Tensor? bias) -> (Tensor out, Tensor alpha)");
  // The same layer with the authors' gate, BatchNorms folded (eval mode):
  //   alpha = sigmoid(gate_weight . relu(hidden_weight . [s || r] + hidden_bias) + gate_bias)
  m.def(
      "gated_conv2d_mlp(Tensor s, Tensor r, Tensor hidden_weight, Tensor hidden_bias, "
      "Tensor gate_weight, Tensor gate_bias, Tensor weight, Tensor? bias) "
      "-> (Tensor out, Tensor alpha)");
  // Fused backward of gated_conv2d; grad_alpha may be None when alpha was not used.
  m.def(
      "gated_conv2d_backward(Tensor grad_out, Tensor? grad_alpha, Tensor s, Tensor r, "
      "Tensor gate_weight, Tensor gate_bias, Tensor weight) -> (Tensor grad_s, Tensor grad_r, "
      "Tensor grad_gate_weight, Tensor grad_gate_bias, Tensor grad_weight, Tensor grad_bias)");

  // Edge ground truth (per pixel, bool): the label is valid (!= ignore_index) and some pixel
  // within Euclidean distance `radius` (dy^2 + dx^2 <= radius^2) has a different valid label.
  // target: integer label map (N, H, W). No autograd (integer input).
  m.def("edge_targets(Tensor target, float radius=2.0, int ignore_index=255) -> Tensor");
  // Boundary F-score (the DAVIS measure) counts, per image n, class k and radius r (pixels):
  //   counts[n, k, j] = [pred boundary pixels, of which within radii[j] of a target boundary
  //   pixel, target boundary pixels, of which within radii[j] of a pred boundary pixel,
  //   pred pixels of class k, target pixels of class k] (int64, shape (N, K, R, 6)),
  // with the pixels where target == ignore_index removed from both maps first.
  m.def(
      "boundary_fscore_counts(Tensor pred, Tensor target, int num_classes, int[] radii, "
      "int ignore_index) -> Tensor");

  // Boundary potential of class probabilities (paper eq. 4): zeta = |grad(G * prob)| / sqrt(2)
  // per class channel, Gaussian of radius ceil(3 sigma), replicate borders.
  m.def("boundary_potential(Tensor prob, float sigma) -> Tensor zeta");
  m.def("boundary_potential_backward(Tensor grad_zeta, Tensor prob, float sigma) -> Tensor");
  // Dual-task loss (paper eq. 5): sum over P+ of |zeta - zeta_hat| / max(|P+|, 1). Returns the
  // loss (0-dim, prob's dtype) and |P+| (0-dim float64, used by the backward). Both are NaN when
  // a CUDA kernel met a bad label (reported later: common/label_errors.h).
  m.def(
      "dual_task_loss(Tensor prob, Tensor target, float sigma, float threshold, "
      "int ignore_index) -> (Tensor loss, Tensor count)");
  m.def(
      "dual_task_loss_backward(Tensor grad, Tensor prob, Tensor target, Tensor count, "
      "float sigma, float threshold, int ignore_index) -> Tensor");

  // Raises the bad labels that CUDA ops recorded on a device without reporting them yet, after
  // waiting for the device (gscnn_ops.check_errors; common/label_errors.h). No tensor argument:
  // one kernel for every dispatch key.
  m.def("_raise_pending_label_errors(int device) -> ()", &gscnn::raise_pending_label_errors);
  // The instruction set the CPU kernels run with here (baseline, avx2 or avx512: the widest this
  // processor has, or GSCNN_CPU_ISA), for tests and `gscnn info`.
  m.def("_cpu_isa() -> str", &gscnn::cpu::cpu_isa_name);
}
