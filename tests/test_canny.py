"""Canny edges in PyTorch (GSCNN's image-gradient input) against OpenCV and by construction."""

import pytest
import torch

from gscnn_ops.filters import canny

from conftest import oracle


def smooth_noisy_image(channels, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, channels, h // 4 + 1, w // 4 + 1, generator=g) * 255
    img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    img = img + torch.randn(img.shape, generator=g) * 8
    return img.round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("channels", [1, 3])
def test_matches_opencv(seed, channels):
    cv2 = oracle("cv2")
    img = smooth_noisy_image(channels, 41 + 9 * seed, 57 + 4 * seed, seed)
    ours = canny(img)[0, 0].numpy() > 0
    arr = img[0].permute(1, 2, 0).contiguous().numpy()
    ref = cv2.Canny(arr if channels == 3 else arr[..., 0], 10, 100) > 0
    assert ref.sum() > 0
    assert (ours == ref).all(), f"{(ours != ref).sum()} pixels differ"


def test_step_edge_and_flat_image():
    img = torch.zeros(1, 3, 20, 30)
    img[..., 15:] = 200.0
    edges = canny(img)
    assert edges.shape == (1, 1, 20, 30) and edges.dtype == torch.float32
    cols = edges[0, 0].nonzero()[:, 1].unique().tolist()
    assert cols and set(cols) <= {14, 15}  # a one-pixel line at the step
    assert canny(torch.full((3, 8, 8), 77.0)).sum() == 0  # flat: no edge, (C, H, W) accepted


def test_float_and_uint8_inputs_agree_and_thresholds_matter():
    img = smooth_noisy_image(3, 48, 64, 7)
    a = canny(img)
    b = canny(img.float())
    assert torch.equal(a, b)
    assert canny(img, 10, 100).sum() > canny(img, 50, 250).sum()


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"canny: image must be"):
        canny(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="low <= high"):
        canny(torch.zeros(1, 8, 8), low=50, high=10)


@pytest.mark.parametrize("seed", range(3))
def test_colour_ties_pick_the_first_channel_as_opencv(seed):
    """Channel 1 is the negative of channel 0: equal magnitudes, opposite gradient signs, so the
    tie rule decides the NMS direction (OpenCV keeps the first channel)."""
    cv2 = oracle("cv2")
    c0 = smooth_noisy_image(1, 45, 61, 10 + seed)[0, 0]
    img = torch.stack([c0, 255 - c0, c0 // 2])[None]
    ours = canny(img)[0, 0].numpy() > 0
    ref = cv2.Canny(img[0].permute(1, 2, 0).contiguous().numpy(), 10, 100) > 0
    assert ref.sum() > 0 and (ours == ref).all(), f"{(ours != ref).sum()} pixels differ"
