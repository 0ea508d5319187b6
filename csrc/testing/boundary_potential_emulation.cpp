// boundary_potential, dual_task_loss and their backwards on the emulated GPU: the op bodies of
// common/boundary_potential_launch.h and common/dual_task_loss_launch.h with the program of
// common/boundary_potential_program.h, exactly as cuda/boundary_potential.cu and
// cuda/dual_task_loss.cu run them.

#include <torch/library.h>

#include "../common/dual_task_loss_launch.h"
#include "emulated_device.h"

namespace gscnn {
namespace testing {
namespace {

at::Tensor potential(const at::Tensor& prob, double sigma, std::vector<int64_t> gpu,
                     std::vector<int64_t> force, int64_t skip_barrier) {
  EmulatedDevice device(gpu, force, skip_barrier);
  return dtl::run_boundary_potential("gscnn_testing.boundary_potential", prob, sigma, device);
}

at::Tensor potential_backward(const at::Tensor& grad_zeta, const at::Tensor& prob, double sigma,
                              std::vector<int64_t> gpu, std::vector<int64_t> force,
                              int64_t skip_barrier) {
  EmulatedDevice device(gpu, force, skip_barrier);
  return dtl::run_boundary_potential_backward("gscnn_testing.boundary_potential_backward",
                                              grad_zeta, prob, sigma, device);
}

std::tuple<at::Tensor, at::Tensor> loss(const at::Tensor& prob, const at::Tensor& target,
                                        double sigma, double threshold, int64_t ignore_index,
                                        std::vector<int64_t> gpu, std::vector<int64_t> force,
                                        int64_t skip_barrier) {
  EmulatedDevice device(gpu, force, skip_barrier);
  return dtl::run_dual_task_loss("gscnn_testing.dual_task_loss", prob, target, sigma, threshold,
                                 ignore_index, device);
}

at::Tensor loss_backward(const at::Tensor& grad, const at::Tensor& prob, const at::Tensor& target,
                         const at::Tensor& count, double sigma, double threshold,
                         int64_t ignore_index, std::vector<int64_t> gpu,
                         std::vector<int64_t> force, int64_t skip_barrier) {
  EmulatedDevice device(gpu, force, skip_barrier);
  return dtl::run_dual_task_loss_backward("gscnn_testing.dual_task_loss_backward", grad, prob,
                                          target, count, sigma, threshold, ignore_index, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_testing, CPU, m) {
  m.impl("boundary_potential", &potential);
  m.impl("boundary_potential_backward", &potential_backward);
  m.impl("dual_task_loss", &loss);
  m.impl("dual_task_loss_backward", &loss_backward);
}

}  // namespace testing
}  // namespace gscnn
