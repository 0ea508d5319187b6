// CPU boundary_potential and boundary_potential_backward: the op bodies of
// common/boundary_potential_launch.h on the CPU device (cpu/boundary_potential_kernels.h).

#include <torch/library.h>

#include "../common/boundary_potential_launch.h"
#include "boundary_potential_kernels.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.boundary_potential";
constexpr const char* kBackwardOp = "gscnn_ops.boundary_potential_backward";

at::Tensor boundary_potential_cpu(const at::Tensor& prob, double sigma) {
  cpu::CpuPipelineDevice device;
  return dtl::run_boundary_potential(kOp, prob, sigma, device);
}

at::Tensor boundary_potential_backward_cpu(const at::Tensor& grad_zeta, const at::Tensor& prob,
                                           double sigma) {
  cpu::CpuPipelineDevice device;
  return dtl::run_boundary_potential_backward(kBackwardOp, grad_zeta, prob, sigma, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("boundary_potential", &boundary_potential_cpu);
  m.impl("boundary_potential_backward", &boundary_potential_backward_cpu);
}

}  // namespace gscnn
