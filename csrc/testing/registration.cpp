// The test extension gscnn_ops_testing (built by tests/emulation.py, never installed): the GPU
// block programs of every op run on the CPU by the emulator (emulator.h), for a GPU described by
// its limits, with the op's own launch selection or a forced launch. Schemas here; the kernels in
// <op>_emulation.cpp.
//
// Common arguments: gpu = 8 device limits (DeviceLimits order) + 3 kernel limits (KernelLimits
// order); force = [] or [threads, blocks, tile_h, tile_w, memory] (0 / -1: not forced);
// skip_barrier >= 0 turns the k-th barrier of every block into a no-op (race-detector tests).

#include <torch/library.h>

#include "emulated_device.h"

namespace gscnn {
namespace testing {

LaunchRecord& last_launch() {
  static LaunchRecord record;
  return record;
}

namespace {
std::vector<int64_t> last_launch_list() { return last_launch().list(); }
std::vector<int64_t> last_launch_passes() { return last_launch().pass_list(); }
}  // namespace

TORCH_LIBRARY(gscnn_testing, m) {
  m.def(
      "gated_conv2d(Tensor s, Tensor r, Tensor gate_weight, Tensor gate_bias, Tensor weight, "
      "Tensor? bias, int[] gpu, int[] force=[], int skip_barrier=-1) -> (Tensor, Tensor)");
  m.def(
      "gated_conv2d_mlp(Tensor s, Tensor r, Tensor hidden_weight, Tensor hidden_bias, "
      "Tensor gate_weight, Tensor gate_bias, Tensor weight, Tensor? bias, int[] gpu, "
      "int[] force=[], int skip_barrier=-1) -> (Tensor, Tensor)");
  m.def(
      "gated_conv2d_backward(Tensor grad_out, Tensor? grad_alpha, Tensor s, Tensor r, "
      "Tensor gate_weight, Tensor gate_bias, Tensor weight, int[] gpu, int[] force=[], "
      "int skip_barrier=-1) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "edge_targets(Tensor target, float radius, int ignore_index, int[] gpu, int[] force=[]) "
      "-> Tensor");
  m.def(
      "boundary_potential(Tensor prob, float sigma, int[] gpu, int[] force=[], "
      "int skip_barrier=-1) -> Tensor");
  m.def(
      "boundary_potential_backward(Tensor grad_zeta, Tensor prob, float sigma, int[] gpu, "
      "int[] force=[], int skip_barrier=-1) -> Tensor");
  m.def(
      "dual_task_loss(Tensor prob, Tensor target, float sigma, float threshold, "
      "int ignore_index, int[] gpu, int[] force=[], int skip_barrier=-1) -> (Tensor, Tensor)");
  m.def(
      "dual_task_loss_backward(Tensor grad, Tensor prob, Tensor target, Tensor count, "
      "float sigma, float threshold, int ignore_index, int[] gpu, int[] force=[], "
      "int skip_barrier=-1) -> Tensor");
  m.def(
      "boundary_fscore_counts(Tensor pred, Tensor target, int num_classes, int[] radii, "
      "int ignore_index, int[] gpu, int[] force=[], int images_per_chunk=0, "
      "int skip_barrier=-1) -> Tensor");
  // [blocks, threads, shared_bytes, scratch_bytes, tile_h, tile_w, barriers of block 0, variant,
  // shared loads, shared stores, their bytes, barriers of all blocks] of the last emulated launch.
  m.def("last_launch() -> int[]", &last_launch_list);
  // [site, wavefronts, conflict-free wavefronts] of each pass site of the last launch, in the
  // order the sites first ran (emulator.h, SharedCounts::passes), flattened.
  m.def("last_launch_passes() -> int[]", &last_launch_passes);
}

}  // namespace testing
}  // namespace gscnn
