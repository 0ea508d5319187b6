// The CPU edge_targets kernel, compiled once per instruction-set build: included by
// edge_targets_{baseline,avx2,avx512}.cpp after edge_targets_kernels.h, with GSCNN_CPU_ISA naming
// the build's namespace. No include guard: meant to be included once per build.
//
// Output rows in parallel. For an output row, one pass over the row per offset (dy, dx) of the
// disk (common/edge_targets_math.h), columns innermost: o[x] |= rule.separates(c[x], nb[x + dx]). That
// loop vectorises (compares of two label rows, an or into a byte row). Unlike the CUDA kernel, a
// pixel cannot stop at the first edge found: every pixel pays the whole disk, about
// pi * radius^2 compares (12 neighbours at radius 2).

namespace gscnn {
namespace cpu {
namespace GSCNN_CPU_ISA {

template <typename T, bool HasIgnore>
void edge_row(const et::EdgeTargetsBlock<T, HasIgnore>& b, int64_t row, uint8_t* o) {
  const int64_t W = b.W, n = row / b.H, y = row - n * b.H;
  const T* img = b.target + n * b.sN;
  const T* c = img + y * b.sH;
  const et::LabelRule<T, HasIgnore> rule = b.rule;
  std::memset(o, 0, W);
  const int64_t y0 = std::max<int64_t>(y - b.disk.R, 0);
  const int64_t y1 = std::min<int64_t>(y + b.disk.R, b.H - 1);
  for (int64_t yy = y0; yy <= y1; ++yy) {
    const int64_t dy = yy - y;
    const int64_t hw = std::min<int64_t>(b.disk.half_width(dy), W - 1);
    const T* nb = img + yy * b.sH;
    for (int64_t dx = -hw; dx <= hw; ++dx) {
      if (dy == 0 && dx == 0) continue;
      const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min<int64_t>(W, W - dx);
      for (int64_t x = x0; x < x1; ++x)
        o[x] |= static_cast<uint8_t>(rule.separates(c[x], nb[x + dx]));
    }
  }
  for (int64_t x = 0; x < W; ++x) o[x] &= static_cast<uint8_t>(rule.valid(c[x]));
}

template <typename Block>
void edge_targets_kernel(const Block& b) {
  // Compares per output row, to give each parallel chunk some 64k of them at least.
  int64_t disk_points = 0;
  for (int64_t dy = -b.disk.R; dy <= b.disk.R; ++dy) disk_points += 2 * b.disk.half_width(dy) + 1;
  const int64_t per_row = std::max<int64_t>(1, b.W * disk_points);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / per_row);
  uint8_t* out = reinterpret_cast<uint8_t*>(b.out);  // bool storage: one byte, 0 or 1
  at::parallel_for(0, b.N * b.H, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) edge_row(b, row, out + row * b.W);
  });
}

#define GSCNN_INSTANTIATE_EDGE_TARGETS(T)                                            \
  template void edge_targets_kernel(const et::EdgeTargetsBlock<T, true>& b);        \
  template void edge_targets_kernel(const et::EdgeTargetsBlock<T, false>& b);
GSCNN_FOR_EACH_LABEL_TYPE(GSCNN_INSTANTIATE_EDGE_TARGETS)
#undef GSCNN_INSTANTIATE_EDGE_TARGETS

}  // namespace GSCNN_CPU_ISA
}  // namespace cpu
}  // namespace gscnn
