// segment: GSCNN on one image, from an AOTInductor package, without Python.
//
//   segment MODEL.pt2 IMAGE.ppm LABELS.pgm [--canny-out CANNY.pgm]
//
// IMAGE is a binary PPM (P6, 8-bit RGB: `python -c "from PIL import Image; Image.open('x.png')
// .save('x.ppm')"` or ImageMagick's `convert x.png x.ppm`). LABELS is written as a binary PGM
// (P5) of the predicted class indices. The package's metadata (written by `gscnn export`) says
// which Canny map the model was trained with: "image" (Canny of the 0..255 image, ours) or
// "release" (Canny of the normalised tensor cast to uint8 as NumPy casts, the authors'
// checkpoints). The Canny below follows gscnn_ops/filters/canny.py step by step (OpenCV's
// algorithm: 3x3 Sobel, L1 magnitude, colour = channel of largest gradient, fixed-point
// non-maximum suppression, 8-connected hysteresis); the tests compare the two bit for bit.

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>

namespace F = torch::nn::functional;
using at::indexing::Slice;

namespace {

at::Tensor read_ppm(const std::string& path) {  // -> uint8 (3, H, W)
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open image '" + path + "'");
  std::string magic;
  int w = 0, h = 0, maxval = 0;
  in >> magic;
  auto skip_comments = [&] {
    in >> std::ws;
    while (in.peek() == '#') { std::string line; std::getline(in, line); in >> std::ws; }
  };
  skip_comments(); in >> w; skip_comments(); in >> h; skip_comments(); in >> maxval;
  if (magic != "P6" || w <= 0 || h <= 0 || maxval != 255)
    throw std::runtime_error("'" + path + "' is not a binary 8-bit PPM (P6, maxval 255)");
  in.get();  // the single whitespace after maxval
  auto hwc = torch::empty({h, w, 3}, torch::kUInt8);
  in.read(reinterpret_cast<char*>(hwc.data_ptr<uint8_t>()), static_cast<std::streamsize>(h) * w * 3);
  if (!in) throw std::runtime_error("'" + path + "' is truncated");
  return hwc.permute({2, 0, 1}).contiguous();
}

void write_pgm(const std::string& path, const at::Tensor& gray) {  // uint8 (H, W)
  auto g = gray.to(torch::kUInt8).contiguous();
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  out << "P5\n" << g.size(1) << " " << g.size(0) << "\n255\n";
  out.write(reinterpret_cast<const char*>(g.data_ptr<uint8_t>()), g.numel());
}

// Canny edges (1, 1, H, W) float in {0, 1} of an integer image (1, C, H, W) with values 0..255.
at::Tensor canny(const at::Tensor& image, int64_t low = 10, int64_t high = 100) {
  auto x = image.to(torch::kFloat32);
  auto p = F::pad(x, F::PadFuncOptions({1, 1, 1, 1}).mode(torch::kReplicate));
  auto at_ = [&](int64_t dy, int64_t dx) {  // p shifted: rows dy..dy+H, columns dx..dx+W
    return p.index({"...", Slice(dy, dy + x.size(2)), Slice(dx, dx + x.size(3))});
  };
  auto dx = (at_(0, 2) + 2 * at_(1, 2) + at_(2, 2)) - (at_(0, 0) + 2 * at_(1, 0) + at_(2, 0));
  auto dy = (at_(2, 0) + 2 * at_(2, 1) + at_(2, 2)) - (at_(0, 0) + 2 * at_(0, 1) + at_(0, 2));
  dx = dx.to(torch::kInt32);
  dy = dy.to(torch::kInt32);
  auto mag = dx.abs() + dy.abs();
  auto best_mag = mag.slice(1, 0, 1), best_dx = dx.slice(1, 0, 1), best_dy = dy.slice(1, 0, 1);
  for (int64_t c = 1; c < mag.size(1); ++c) {  // strict '>': ties keep the earlier channel
    auto take = mag.slice(1, c, c + 1) > best_mag;
    best_mag = at::where(take, mag.slice(1, c, c + 1), best_mag);
    best_dx = at::where(take, dx.slice(1, c, c + 1), best_dx);
    best_dy = at::where(take, dy.slice(1, c, c + 1), best_dy);
  }
  mag = best_mag; dx = best_dx; dy = best_dy;

  auto m = F::pad(mag, F::PadFuncOptions({1, 1, 1, 1}));
  const int64_t H = mag.size(2), W = mag.size(3);
  auto n = [&](int64_t oy, int64_t ox) {  // neighbour at offset (oy, ox), 0 outside the image
    return m.index({"...", Slice(1 + oy, 1 + oy + H), Slice(1 + ox, 1 + ox + W)});
  };
  auto c = n(0, 0);
  constexpr int64_t kShift = 15, kTg22 = 13573;
  auto ax = dx.abs(), ay = dy.abs().bitwise_left_shift(kShift);
  auto tg22x = ax * kTg22;
  auto tg67x = tg22x + ax.bitwise_left_shift(kShift + 1);
  auto horizontal = ay < tg22x;
  auto vertical = horizontal.logical_not().logical_and(ay > tg67x);
  auto diagonal = horizontal.logical_not().logical_and(vertical.logical_not());
  auto same_sign = dx.bitwise_xor(dy) >= 0;
  auto diag_max = at::where(same_sign, (c > n(-1, -1)).logical_and(c > n(1, 1)),
                            (c > n(-1, 1)).logical_and(c > n(1, -1)));
  auto is_max = (horizontal.logical_and(c > n(0, -1)).logical_and(c >= n(0, 1)))
                    .logical_or(vertical.logical_and(c > n(-1, 0)).logical_and(c >= n(1, 0)))
                    .logical_or(diagonal.logical_and(diag_max));
  auto candidate = is_max.logical_and(c > low);
  auto cand = candidate.to(torch::kFloat32);
  auto cur = candidate.logical_and(c > high).to(torch::kFloat32);
  while (true) {  // hysteresis: grow strong edges through 8-connected candidates
    auto grown = at::maximum(at::max_pool2d(cur, {3, 3}, {1, 1}, {1, 1}) * cand, cur);
    if (at::equal(grown, cur)) break;
    cur = grown;
  }
  return cur;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && !(argc == 6 && std::string(argv[4]) == "--canny-out")) {
    std::cerr << "usage: segment MODEL.pt2 IMAGE.ppm LABELS.pgm [--canny-out CANNY.pgm]\n";
    return 2;
  }
  try {
    torch::NoGradGuard no_grad;
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    auto meta = loader.get_metadata();
    const std::string mode = meta.count("gscnn.canny") ? meta["gscnn.canny"] : "image";

    auto raw = read_ppm(argv[2]).unsqueeze(0);  // (1, 3, H, W) uint8
    auto mean = torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1});
    auto std_ = torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1});
    auto image = (raw.to(torch::kFloat32) / 255.0f - mean) / std_;
    at::Tensor edges;
    if (mode == "release") {  // NumPy's float -> uint8 cast: truncate, wrap modulo 256
      edges = canny(at::remainder(image.to(torch::kInt64), 256));
    } else {
      edges = canny(raw);
    }
    auto outputs = loader.run({image, edges});
    auto labels = outputs.at(0).argmax(1)[0];
    write_pgm(argv[3], labels);
    if (argc == 6) write_pgm(argv[5], edges[0][0] * 255);
    std::cout << "segmented " << argv[2] << " (" << image.size(2) << "x" << image.size(3)
              << ", Canny: " << mode << ") into " << argv[3] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "segment: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
