// CPU dual_task_loss and dual_task_loss_backward: the op bodies of common/dual_task_loss_launch.h
// on the CPU device, whose kernels (cpu/boundary_potential_kernels.h) skip the (tile, class) pairs
// that cannot reach P+. Bad labels are raised right after the kernel.

#include <torch/library.h>

#include "../common/dual_task_loss_launch.h"
#include "boundary_potential_kernels.h"
#include "boundary_potential_kernels.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.dual_task_loss";
constexpr const char* kBackwardOp = "gscnn_ops.dual_task_loss_backward";

std::tuple<at::Tensor, at::Tensor> dual_task_loss_cpu(const at::Tensor& prob,
                                                      const at::Tensor& target, double sigma,
                                                      double threshold, int64_t ignore_index) {
  cpu::CpuPipelineDevice device;
  return dtl::run_dual_task_loss(kOp, prob, target, sigma, threshold, ignore_index, device);
}

at::Tensor dual_task_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& prob,
                                       const at::Tensor& target, const at::Tensor& count,
                                       double sigma, double threshold, int64_t ignore_index) {
  cpu::CpuPipelineDevice device;
  return dtl::run_dual_task_loss_backward(kBackwardOp, grad, prob, target, count, sigma,
                                          threshold, ignore_index, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("dual_task_loss", &dual_task_loss_cpu);
  m.impl("dual_task_loss_backward", &dual_task_loss_backward_cpu);
}

}  // namespace gscnn
