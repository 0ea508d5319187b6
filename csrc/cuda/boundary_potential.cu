// CUDA boundary_potential and boundary_potential_backward: the block program of
// common/boundary_potential_program.h launched by cuda/launch.cuh with the launch that
// common/boundary_potential_launch.h selects. One block per (image, tile), looping over the K
// class channels with the tile and its halo in shared memory (global scratch memory for sigmas
// whose halo outgrows it). The backward recomputes the tile with a halo of 2R + 2 and gathers the
// adjoints (no scatter, no atomics), writing grad_prob once; no N*K*H*W intermediate.

#include <torch/library.h>

#include "../common/boundary_potential_launch.h"
#include "launch.cuh"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.boundary_potential";
constexpr const char* kBackwardOp = "gscnn_ops.boundary_potential_backward";

at::Tensor boundary_potential_cuda(const at::Tensor& prob, double sigma) {
  const auto guard = cuda::guard_device_of(prob);
  cuda::Device device;
  return dtl::run_boundary_potential(kOp, prob, sigma, device);
}

at::Tensor boundary_potential_backward_cuda(const at::Tensor& grad_zeta, const at::Tensor& prob,
                                            double sigma) {
  const auto guard = cuda::guard_device_of(prob);
  cuda::Device device;
  return dtl::run_boundary_potential_backward(kBackwardOp, grad_zeta, prob, sigma, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) {
  m.impl("boundary_potential", &boundary_potential_cuda);
  m.impl("boundary_potential_backward", &boundary_potential_backward_cuda);
}

}  // namespace gscnn
