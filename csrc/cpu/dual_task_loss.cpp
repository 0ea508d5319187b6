// CPU dual_task_loss and dual_task_loss_backward: the block program of
// common/boundary_potential_program.h (with the loss) with one thread per block, tiles spread
// over the cores (CpuPipelineDevice, common/boundary_potential_launch.h). Bad labels are raised
// right after the kernel.

#include <torch/library.h>

#include "../common/dual_task_loss_launch.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.dual_task_loss";
constexpr const char* kBackwardOp = "gscnn_ops.dual_task_loss_backward";

std::tuple<at::Tensor, at::Tensor> dual_task_loss_cpu(const at::Tensor& prob,
                                                      const at::Tensor& target, double sigma,
                                                      double threshold, int64_t ignore_index) {
  dtl::CpuPipelineDevice device;
  return dtl::run_dual_task_loss(kOp, prob, target, sigma, threshold, ignore_index, device);
}

at::Tensor dual_task_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& prob,
                                       const at::Tensor& target, const at::Tensor& count,
                                       double sigma, double threshold, int64_t ignore_index) {
  dtl::CpuPipelineDevice device;
  return dtl::run_dual_task_loss_backward(kBackwardOp, grad, prob, target, count, sigma,
                                          threshold, ignore_index, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("dual_task_loss", &dual_task_loss_cpu);
  m.impl("dual_task_loss_backward", &dual_task_loss_backward_cpu);
}

}  // namespace gscnn
