// CUDA dual_task_loss and dual_task_loss_backward: the block program of
// common/boundary_potential_program.h with the loss, launched by cuda/launch.cuh. The forward
// writes one (sum, count, bad labels) row per tile (a fixed-order block reduction, then a
// fixed-order sum of the rows): no atomics on floats, bitwise reproducible. Labels are checked
// where the kernel loads them, into a device status word that the host reads without a sync
// (common/label_errors.h, cuda/label_status.cpp).

#include <torch/library.h>

#include "../common/dual_task_loss_launch.h"
#include "launch.cuh"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.dual_task_loss";
constexpr const char* kBackwardOp = "gscnn_ops.dual_task_loss_backward";

std::tuple<at::Tensor, at::Tensor> dual_task_loss_cuda(const at::Tensor& prob,
                                                       const at::Tensor& target, double sigma,
                                                       double threshold, int64_t ignore_index) {
  const auto guard = cuda::guard_device_of(prob);
  cuda::Device device;
  return dtl::run_dual_task_loss(kOp, prob, target, sigma, threshold, ignore_index, device);
}

at::Tensor dual_task_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& prob,
                                        const at::Tensor& target, const at::Tensor& count,
                                        double sigma, double threshold, int64_t ignore_index) {
  const auto guard = cuda::guard_device_of(prob);
  cuda::Device device;
  return dtl::run_dual_task_loss_backward(kBackwardOp, grad, prob, target, count, sigma,
                                          threshold, ignore_index, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("dual_task_loss", &dual_task_loss_cuda);
  m.impl("dual_task_loss_backward", &dual_task_loss_backward_cuda);
}

}  // namespace gscnn
