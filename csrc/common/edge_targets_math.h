#pragma once
// Edge ground truth of Gated-SCNN, written once for the CPU and the CUDA kernels.
//
// A pixel (n, y, x) of an integer label map is an edge when its label is valid (!= ignore_index)
// and some pixel (n, y + dy, x + dx) of the image with dy^2 + dx^2 <= radius^2 has a different
// valid label. Every class counts, class 0 included (the authors' release gives class 0 no
// boundary). Pixels outside the image do not exist: the border is not an edge by itself.
//
// The disk is the set of integer offsets with dy^2 + dx^2 <= d2max, d2max = floor(radius^2):
// dy^2 + dx^2 is an integer, so this is exactly dy^2 + dx^2 <= radius^2 (radius^2 in double).
//
// Everything here is used by both kernels: the CUDA block program (common/edge_targets_program.h:
// EdgeTargetsBlock::pixel, one thread per pixel) and the CPU row kernel
// (cpu/edge_targets_kernels_impl.h), which walks the same disk rows with the same label rule.

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace gscnn {
namespace et {

// floor(sqrt(v)) for 0 <= v < 2^62, exact: the float estimate is corrected in integers.
GSCNN_HD int64_t isqrt(int64_t v) {
  int64_t r = static_cast<int64_t>(sqrtf(static_cast<float>(v)));  // host and device: IEEE
  while (r > 0 && r * r > v) --r;
  while ((r + 1) * (r + 1) <= v) ++r;
  return r;
}

// The disk of offsets (dy, dx) with dy^2 + dx^2 <= d2max.
struct Disk {
  int64_t d2max;
  int64_t R;  // the largest |dy| (and |dx|) in the disk: isqrt(d2max)

  // Largest dx >= 0 with dy^2 + dx^2 <= d2max, for |dy| <= R.
  GSCNN_HD int64_t half_width(int64_t dy) const { return isqrt(d2max - dy * dy); }

  // Host side. Radii beyond H + W reach every pixel of an H x W image (whose largest distance is
  // below H + W), so they are clamped there: same result, and d2max stays far from overflow.
  // radius must be >= 0 (checked by the caller); +inf is allowed.
  static Disk of(double radius, int64_t H, int64_t W) {
    const double reach = static_cast<double>(H + W);
    const double r = radius < reach ? radius : reach;
    const int64_t d2max = static_cast<int64_t>(std::floor(r * r));
    return Disk{d2max, isqrt(d2max)};
  }
};

// Which labels count. HasIgnore is false when ignore_index cannot be represented in the label
// dtype (uint8 labels with ignore_index -1, say): then no pixel is ignored.
template <typename T, bool HasIgnore>
struct LabelRule {
  T ignore;
  GSCNN_HD bool valid(T v) const { return !HasIgnore || v != ignore; }
  // Does a neighbour labelled nb make a valid pixel labelled c an edge? (Without a branch, so
  // that the CPU loops over a row vectorise.)
  GSCNN_HD bool separates(T c, T nb) const { return (nb != c) & valid(nb); }
};

// One problem as the kernels see it: the label map read through its strides (any layout, no
// copy), the output a contiguous (N, H, W) bool map. Built on the host, passed by value to CUDA.
template <typename T, bool HasIgnore>
struct EdgeTargetsBlock {
  const T* target;
  int64_t sN, sH, sW;
  bool* out;
  int64_t N, H, W;
  Disk disk;
  LabelRule<T, HasIgnore> rule;

  GSCNN_HD int64_t pixels() const { return N * H * W; }

  // The CUDA kernel body: pixel p (in (n, y, x) order) of the output. Walks the disk rows that
  // lie inside the image, clipped to the image columns, and stops at the first neighbour with a
  // different valid label. The centre is visited too; it never separates from itself.
  GSCNN_HD void pixel(int64_t p) const {
    const int64_t HW = H * W;
    const int64_t n = p / HW;
    const int64_t yx = p - n * HW;
    const int64_t y = yx / W;
    const int64_t x = yx - y * W;
    const T* img = target + n * sN;
    const T c = img[y * sH + x * sW];
    bool edge = false;
    if (rule.valid(c)) {
      const int64_t R = disk.R;
      const int64_t y0 = y - R > 0 ? y - R : 0;
      const int64_t y1 = y + R < H - 1 ? y + R : H - 1;
      for (int64_t yy = y0; yy <= y1 && !edge; ++yy) {
        const int64_t hw = disk.half_width(yy - y);
        const int64_t x0 = x - hw > 0 ? x - hw : 0;
        const int64_t x1 = x + hw < W - 1 ? x + hw : W - 1;
        const T* row = img + yy * sH;
        for (int64_t xx = x0; xx <= x1; ++xx) {
          if (rule.separates(c, row[xx * sW])) {
            edge = true;
            break;
          }
        }
      }
    }
    out[p] = edge;
  }
};

}  // namespace et
}  // namespace gscnn
