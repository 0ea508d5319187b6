#pragma once
// The host side of dual_task_loss and dual_task_loss_backward on every device: the block program
// of the boundary potential with the loss (common/boundary_potential_program.h, selection and CPU
// device in common/boundary_potential_launch.h), the label checks, and the final reduction.
//
// No host synchronisation: labels are checked by the kernel itself where it loads them
// (common/label_errors.h). A call that meets a bad label returns a NaN loss and count (so its
// backward gives NaN gradients) and the error is raised on the CPU at once, on CUDA at the next
// call of the op or at gscnn_ops.check_errors().

#include <limits>
#include <tuple>

#include "boundary_potential_launch.h"

namespace gscnn {
namespace dtl {

// target: (N, H, W) int64 on prob's device. Its values are checked by the kernels.
inline void check_target(const char* op, const at::Tensor& prob, const at::Tensor& target) {
  check_dim(op, "target", target, 3, "(N, H, W)");
  TORCH_CHECK(target.scalar_type() == at::kLong, op,
              ": argument 'target' must be an int64 tensor of class indices, got ",
              target.scalar_type());
  TORCH_CHECK(target.device() == prob.device(), op, ": argument 'target' is on ",
              target.device(), " but 'prob' is on ", prob.device());
  TORCH_CHECK(target.size(0) == prob.size(0) && target.size(1) == prob.size(2) &&
                  target.size(2) == prob.size(3),
              op, ": argument 'target' must have shape (N, H, W) = (", prob.size(0), ", ",
              prob.size(2), ", ", prob.size(3), ") to match 'prob' of shape ", prob.sizes(),
              ", got ", target.sizes());
}

template <typename Device>
std::tuple<at::Tensor, at::Tensor> run_dual_task_loss(const char* op, const at::Tensor& prob,
                                                      const at::Tensor& target, double sigma,
                                                      double threshold, int64_t ignore_index,
                                                      Device& device) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  TORCH_CHECK(std::isfinite(threshold), op, ": argument 'threshold' must be finite, got ",
              threshold);
  check_target(op, prob, target);
  const auto dopts = prob.options().dtype(at::kDouble);
  if (empty_image(prob)) return {at::zeros({}, prob.options()), at::zeros({}, dopts)};
  const int64_t K = prob.size(1);
  uint64_t* status = device.label_status_begin(labels::kDualTaskLossTarget, op, "target", K,
                                               ignore_index, prob);
  at::Tensor partials;  // (tiles, 3): sum |zeta - zeta_hat|, |P+|, bad labels
  GSCNN_PIPELINE_DISPATCH(prob.scalar_type(), [&] {
    with_radius(sigma, [&](auto kr) {
      device.run(op, prob,
                 pipeline_selector<true, false>(prob, sigma, sizeof(at::opmath_type<scalar_t>)),
                 [&](const PipelineChoice& c) {
                   partials = at::empty({num_tiles(prob, c.tile), 3}, dopts);
                   return make_pipeline<scalar_t, true, false, decltype(kr)::value>(
                       prob, target, at::Tensor(), at::Tensor(), nullptr,
                       partials.data_ptr<double>(), status, sigma, threshold, ignore_index,
                       c.tile);
                 });
    });
  });
  device.label_status_end(labels::kDualTaskLossTarget, op, "target", K, ignore_index, prob);
  const auto total = partials.sum(0);  // a fixed order for a given shape: deterministic
  const auto count = at::where(total.select(0, 2) > 0,
                               std::numeric_limits<double>::quiet_NaN(), total.select(0, 1));
  const auto loss = total.select(0, 0).div(count.clamp_min(1)).to(prob.scalar_type());
  return {loss, count};
}

template <typename Device>
at::Tensor run_dual_task_loss_backward(const char* op, const at::Tensor& grad_loss,
                                       const at::Tensor& prob, const at::Tensor& target,
                                       const at::Tensor& count, double sigma, double threshold,
                                       int64_t ignore_index, Device& device) {
  check_prob(op, "prob", prob);
  check_sigma(op, sigma);
  check_target(op, prob, target);
  TORCH_CHECK(grad_loss.numel() == 1 && grad_loss.device() == prob.device(), op,
              ": argument 'grad' must be a one-element tensor on ", prob.device(), ", got shape ",
              grad_loss.sizes(), " on ", grad_loss.device());
  TORCH_CHECK(count.numel() == 1 && count.device() == prob.device(), op,
              ": argument 'count' must be a one-element tensor on ", prob.device(),
              ", got shape ", count.sizes(), " on ", count.device());
  auto grad = at::empty(prob.sizes(), prob.options().memory_format(output_memory_format(prob)));
  if (empty_image(prob)) return grad;
  // d loss / d zeta = grad * sign(zeta - zeta_hat) / max(|P+|, 1) on P+: one scalar, kept on the
  // device (no synchronisation).
  const auto scale = grad_loss.reshape({})
                         .to(at::kDouble)
                         .div(count.reshape({}).to(at::kDouble).clamp_min(1))
                         .contiguous();
  const int64_t K = prob.size(1);
  uint64_t* status = device.label_status_begin(labels::kDualTaskLossTarget, op, "target", K,
                                               ignore_index, prob);
  GSCNN_PIPELINE_DISPATCH(prob.scalar_type(), [&] {
    with_radius(sigma, [&](auto kr) {
      device.run(op, prob,
                 pipeline_selector<true, true>(prob, sigma, sizeof(at::opmath_type<scalar_t>)),
                 [&](const PipelineChoice& c) {
                   return make_pipeline<scalar_t, true, true, decltype(kr)::value>(
                       prob, target, grad, at::Tensor(), scale.const_data_ptr<double>(), nullptr,
                       status, sigma, threshold, ignore_index, c.tile);
                 });
    });
  });
  device.label_status_end(labels::kDualTaskLossTarget, op, "target", K, ignore_index, prob);
  return grad;
}

}  // namespace dtl
}  // namespace gscnn
