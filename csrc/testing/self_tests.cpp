// Test-only entry points of the test extension that are not ops of the library:
//   emulator_selftest(case)   tiny block programs that do one thing wrong each (or nothing), to
//                             show what the emulator's checks catch;
//   select_launch(op, sizes, gpu)  the launch each op's selection makes, without running it;
//   intrinsics / exp_nonpositive / atomic_min  the host models of common/device_intrinsics.h.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <string>
#include <thread>
#include <vector>

#include "../common/boundary_fscore_launch.h"
#include "../common/boundary_potential_launch.h"
#include "../common/device_intrinsics.h"
#include "../common/edge_targets_launch.h"
#include "../common/gated_conv2d_launch.h"
#include "emulated_device.h"
#include "emulator.h"

namespace gscnn {
namespace testing {
namespace {

// Each thread writes its slot, then (after a barrier, unless the case removes it) reads its
// neighbour's: the smallest program with a barrier that matters.
struct NeighbourExchange {
  static constexpr int kMaxThreads = 256;
  std::string which;
  float* out;
  template <typename Exec>
  void operator()(Exec& ex) const {
    auto sm = ex.template shared<float>();
    const int64_t T = ex.threads();
    auto regs = ex.template registers<float>();
    if (which == "uninitialised_register") {
      ex.for_each_thread([&](int64_t t) { out[t] = regs(t); });
      return;
    }
    ex.for_each_thread([&](int64_t t) {
      if (which != "uninitialised") sm[t] = static_cast<float>(t);
      if (which == "write_write") sm[(t + 1) % T] = 0.0f;
    });
    if (which != "missing_barrier") ex.sync();
    ex.for_each_thread([&](int64_t t) {
      const int64_t at = which == "out_of_bounds" ? T + t : (t + 1) % T;
      out[t] = sm[at];
    });
  }
};

at::Tensor emulator_selftest(std::string which, int64_t threads) {
  auto out = at::zeros({threads}, at::kFloat);
  Launch l;
  l.threads = threads;
  l.shared_bytes = threads * static_cast<int64_t>(sizeof(float));
  LaunchRecord& rec = last_launch();
  rec = LaunchRecord{l.blocks, l.threads, l.shared_bytes, 0};
  rec.barriers = emulate("emulator_selftest", NeighbourExchange{which, out.data_ptr<float>()}, l,
                         EmuOptions{}, &rec.shared);
  return out;
}

// Each group of `group` consecutive threads stores `width` floats (one vector store: width 1, 2,
// 4 or 8) at float offset (t / group) * stride (its first thread stores, the others' stores land on
// the same words too) and, after a barrier, loads them back; with `uniform`, thread 0 stores at
// offset 0 and every thread loads from there (a broadcast). The wavefronts of one access pattern
// (emulator.h, WarpAccesses).
struct BankPattern {
  static constexpr int kMaxThreads = 1024;
  int64_t stride, width, group;
  bool uniform;
  template <int N, typename Ptr>
  static void store(const Ptr& p, float v) {
    float x[N];
    for (int i = 0; i < N; ++i) x[i] = v;
    store_vector<N>(p, x);
  }
  template <int N, typename Ptr>
  static float load(const Ptr& p) {
    float x[N];
    load_vector<N>(p, x);
    return x[0];
  }
  template <typename Exec>
  void operator()(Exec& ex) const {
    auto sm = ex.template shared<float>();
    const auto at = [&](int64_t t) { return sm + (uniform ? 0 : t / group * stride); };
    ex.for_each_thread([&](int64_t t) {
      if ((uniform && t > 0) || t % group != 0) return;  // one writer per address
      if (width == 8) store<8>(at(t), 1.0f);
      if (width == 4) store<4>(at(t), 1.0f);
      if (width == 2) store<2>(at(t), 1.0f);
      if (width == 1) store<1>(at(t), 1.0f);
    });
    ex.sync();
    float sum = 0;
    ex.for_each_thread([&](int64_t t) {
      sum += width == 8   ? load<8>(at(t))
             : width == 4 ? load<4>(at(t))
             : width == 2 ? load<2>(at(t))
                          : load<1>(at(t));
    });
    (void)sum;
  }
};

// [load wavefronts, store wavefronts, conflict-free wavefronts of both] of BankPattern with `threads` threads.
std::vector<int64_t> bank_pattern(int64_t stride, int64_t width, int64_t group, bool uniform,
                                  int64_t threads) {
  TORCH_CHECK(width == 1 || width == 2 || width == 4 || width == 8,
              "bank_pattern: width 1, 2, 4 or 8");
  TORCH_CHECK(stride % width == 0 && stride > 0 && group > 0,
              "bank_pattern: stride a multiple of width, group positive");
  Launch l;
  l.threads = threads;
  l.shared_bytes = threads * stride * static_cast<int64_t>(sizeof(float));
  SharedCounts counts;
  emulate("bank_pattern", BankPattern{stride, width, group, uniform}, l, EmuOptions{}, &counts);
  return {counts.load_wavefronts, counts.store_wavefronts, counts.conflict_free_wavefronts};
}

std::vector<int64_t> as_list(const Launch& l, int64_t tile_h = 0, int64_t tile_w = 0,
                             int64_t variant = 0) {
  return {l.blocks, l.threads, l.shared_bytes, l.scratch_bytes_per_block, tile_h, tile_w, variant};
}

// shared(T): the shared memory of a shape-stream program, Program<scalar_t, C, nhwc>, for the
// element size (8: double, 4: float, 2: bfloat16; NCHW programs depend only on the accumulation
// type) and C in {8, 16, 32} of select_launch's sizes [P, C, Cr, bytes].
template <template <typename, int, bool> class Program>
auto small_c_shared_bytes(const std::vector<int64_t>& sz, bool nhwc) {
  const int64_t C = sz.at(1), Cr = sz.at(2), bytes = sz.at(3);
  TORCH_CHECK(C == 8 || C == 16 || C == 32, "select_launch: C must be 8, 16 or 32, got ", C);
  TORCH_CHECK(bytes == 8 || bytes == 4 || (nhwc && bytes == 2),
              "select_launch: unsupported element size ", bytes);
  return [=](int64_t T) -> int64_t {
    auto of = [&](auto scalar_tag, auto kc) {
      using scalar_t = decltype(scalar_tag);
      constexpr int kC = decltype(kc)::value;
      return nhwc ? Program<scalar_t, kC, true>::shared_bytes(Cr, T)
                  : Program<scalar_t, kC, false>::shared_bytes(Cr, T);
    };
    auto by_c = [&](auto scalar_tag) {
      return C == 8    ? of(scalar_tag, std::integral_constant<int, 8>{})
             : C == 16 ? of(scalar_tag, std::integral_constant<int, 16>{})
                       : of(scalar_tag, std::integral_constant<int, 32>{});
    };
    return bytes == 8 ? by_c(double{}) : bytes == 4 ? by_c(float{}) : by_c(c10::BFloat16{});
  };
}

// [blocks, threads, shared_bytes, scratch_bytes, tile_h, tile_w, variant] of an op's launch for
// `sizes` on the GPU `gpu` (8 device + 3 kernel limits).
std::vector<int64_t> select_launch(std::string op, std::vector<int64_t> sz,
                                   std::vector<int64_t> gpu) {
  TORCH_CHECK(gpu.size() == 11, "select_launch: 'gpu' must hold 11 limits");
  const DeviceLimits d = DeviceLimits::from_list({gpu.begin(), gpu.begin() + 8});
  const KernelLimits k = KernelLimits::from_list({gpu.begin() + 8, gpu.end()});
  if (op == "gated_conv2d") {  // P, C, Cr, acc_bytes
    const auto c = gcl::select_forward(sz.at(0), sz.at(1), sz.at(2), sz.at(3), d, k);
    return as_list(c.launch, 0, 0, c.staged ? 0 : 1);
  }
  // P, C (= C_out: 8, 16 or 32), Cr, acc_bytes; _nhwc: P, C, Cr, element bytes (8, 4 or 2)
  if (op == "gated_conv2d_small_c" || op == "gated_conv2d_small_c_nhwc") {
    const auto shared = small_c_shared_bytes<gcl::ForwardProgramSmallC>(sz, op.ends_with("_nhwc"));
    return as_list(gcl::select_forward_small_c(sz.at(0), shared, d, k), 0, 0, 2);
  }
  if (op == "gated_conv2d_backward_small_c" || op == "gated_conv2d_backward_small_c_nhwc") {
    const auto shared =
        small_c_shared_bytes<gcl::BackwardProgramSmallC>(sz, op.ends_with("_nhwc"));
    const gcl::GradLayout L{sz.at(1), sz.at(2), sz.at(1)};
    return as_list(gcl::select_backward_small_c(sz.at(0), L, shared, d, k), 0, 0, 2);
  }
  if (op == "gated_conv2d_backward") {  // P, C, Cr, Cout, acc_bytes
    return as_list(gcl::select_backward(sz.at(0), gcl::GradLayout{sz.at(1), sz.at(2), sz.at(3)},
                                        sz.at(4), d, k));
  }
  if (op == "edge_targets" || op == "boundary_fscore_mask")  // pixels / mask words
    return as_list(select_grid_stride(sz.at(0), d, k, LaunchOverride{}));
  if (op == "boundary_fscore_blocks") {  // planes, cells, counters per thread
    const auto c = bfs::select_blocks(sz.at(0), sz.at(1), sz.at(2), d, k);
    return as_list(c.launch, 0, 0, c.chunks);
  }
  const bool potential = op.rfind("boundary_potential", 0) == 0;
  const bool loss = op.rfind("dual_task_loss", 0) == 0;
  if (potential || loss) {  // N, H, W, R, acc_bytes
    const bool backward = op.size() > 9 && op.substr(op.size() - 9) == "_backward";
    const auto c = dtl::select_pipeline(sz.at(0), sz.at(1), sz.at(2), sz.at(3), loss, backward,
                                        sz.at(4), d, k);
    return as_list(c.launch, c.tile.TH, c.tile.TW);
  }
  TORCH_CHECK(false, "select_launch: unknown op '", op, "'");
}

// ffs, clz and popcount of each 64-bit word (int64 storage), by the host models.
std::tuple<at::Tensor, at::Tensor, at::Tensor> intrinsics(const at::Tensor& words) {
  const auto w = words.contiguous();
  auto ffs = at::empty_like(w), clz = at::empty_like(w), pop = at::empty_like(w);
  for (int64_t i = 0; i < w.numel(); ++i) {
    const uint64_t v = static_cast<uint64_t>(w.data_ptr<int64_t>()[i]);
    ffs.data_ptr<int64_t>()[i] = hd::ffs64(v);
    clz.data_ptr<int64_t>()[i] = hd::clz64(v);
    pop.data_ptr<int64_t>()[i] = hd::popcount64(v);
  }
  return {ffs, clz, pop};
}

at::Tensor exp_nonpositive(const at::Tensor& x) {
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "exp_nonpositive", [&] {
    const auto xc = x.contiguous();
    for (int64_t i = 0; i < x.numel(); ++i)
      out.data_ptr<scalar_t>()[i] = hd::exp_nonpositive(xc.data_ptr<scalar_t>()[i]);
  });
  return out;
}

// The minimum of `values` (as unsigned 64-bit words) folded by `threads` host threads at once.
int64_t atomic_min(const at::Tensor& values, int64_t threads) {
  const auto v = values.contiguous();
  uint64_t word = ~uint64_t(0);
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int64_t i = t; i < v.numel(); i += threads)
        hd::atomic_min_u64(&word, static_cast<uint64_t>(v.data_ptr<int64_t>()[i]));
    });
  }
  for (auto& th : pool) th.join();
  return static_cast<int64_t>(word);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gscnn_testing, m) {
  m.def("emulator_selftest(str which, int threads=32) -> Tensor", &emulator_selftest);
  m.def("select_launch(str op, int[] sizes, int[] gpu) -> int[]", &select_launch);
  m.def("bank_pattern(int stride, int width, int group, bool uniform, int threads) -> int[]", &bank_pattern);
  m.def("intrinsics(Tensor words) -> (Tensor, Tensor, Tensor)");
  m.def("exp_nonpositive(Tensor x) -> Tensor");
  m.def("atomic_min(Tensor values, int threads) -> int");
}

TORCH_LIBRARY_IMPL(gscnn_testing, CPU, m) {
  m.impl("intrinsics", &intrinsics);
  m.impl("exp_nonpositive", &exp_nonpositive);
  m.impl("atomic_min", &atomic_min);
}

}  // namespace testing
}  // namespace gscnn
