// CPU boundary_potential and boundary_potential_backward: the block program of
// common/boundary_potential_program.h with one thread per block, tiles spread over the cores
// (CpuPipelineDevice, common/boundary_potential_launch.h).

#include <torch/library.h>

#include "../common/boundary_potential_launch.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.boundary_potential";
constexpr const char* kBackwardOp = "gscnn_ops.boundary_potential_backward";

at::Tensor boundary_potential_cpu(const at::Tensor& prob, double sigma) {
  dtl::CpuPipelineDevice device;
  return dtl::run_boundary_potential(kOp, prob, sigma, device);
}

at::Tensor boundary_potential_backward_cpu(const at::Tensor& grad_zeta, const at::Tensor& prob,
                                           double sigma) {
  dtl::CpuPipelineDevice device;
  return dtl::run_boundary_potential_backward(kBackwardOp, grad_zeta, prob, sigma, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("boundary_potential", &boundary_potential_cpu);
  m.impl("boundary_potential_backward", &boundary_potential_backward_cpu);
}

}  // namespace gscnn
