"""Training transforms: geometry keeps image and label aligned, photometry leaves labels alone,
everything is reproducible from the generator, and bad arguments are refused."""

import pytest
import torch

from gscnn_ops.data import (
    ColorJitter,
    Compose,
    GaussianBlur,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    TrainTransform,
    resize,
)

H, W = 24, 24
IGNORE = -1  # labels here are pixel coordinates, which go past 255


def coordinate_pair():
    """An image whose colour encodes its pixel's position (red = 10 y + 5, green = 10 x + 5,
    never 0) and a label that is the same position (100 y + x): after any geometric transform,
    label = f(colour) must still hold wherever the pair is aligned."""
    y = torch.arange(H).view(H, 1).expand(H, W)
    x = torch.arange(W).view(1, W).expand(H, W)
    image = torch.stack([10 * y + 5, 10 * x + 5, torch.full_like(y, 128)]).to(torch.uint8)
    return image, 100 * y + x


def decode(image):
    """Position (y, x), possibly fractional, that a pixel's colour encodes."""
    return (image[0].double() - 5) / 10, (image[1].double() - 5) / 10


def geometric(crop_size, scale_range):
    """TrainTransform with colour jitter and blur off, so colours are only moved."""
    return TrainTransform(
        crop_size,
        scale_range=scale_range,
        brightness=0,
        contrast=0,
        saturation=0,
        blur_prob=0,
        ignore_index=IGNORE,
    )


@pytest.mark.parametrize("crop_size", [(16, 16), (30, 20), 40])
def test_crop_pad_flip_keep_the_pair_exactly_aligned(crop_size):
    image, label = coordinate_pair()
    transform = geometric(crop_size, scale_range=(1.0, 1.0))
    size = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    flipped = 0
    for seed in range(12):
        out_image, out_label = transform(image, label, torch.Generator().manual_seed(seed))
        assert out_image.dtype == torch.uint8 and out_label.dtype == torch.int64
        assert out_image.shape == (3, *size) and out_label.shape == size
        padded = out_label == IGNORE
        # Padding is exactly where the label is ignore, and black there.
        assert torch.equal(padded, (out_image == 0).all(0))
        y, x = decode(out_image)
        assert torch.equal((100 * y + x)[~padded], out_label[~padded].double())
        row = out_label[~padded].view(-1)
        flipped += int(row.numel() > 1 and (row[1] - row[0]).item() < 0)
    assert flipped > 0  # some of the 12 were mirrored and still matched


@pytest.mark.parametrize("scale_range", [(0.5, 0.9), (1.1, 2.0), (0.5, 2.0)])
def test_scaling_keeps_the_pair_aligned(scale_range):
    image, label = coordinate_pair()
    transform = geometric((20, 20), scale_range)
    checked = 0
    for seed in range(8):
        out_image, out_label = transform(image, label, torch.Generator().manual_seed(seed))
        assert out_image.shape == (3, 20, 20) and out_label.shape == (20, 20)
        padded = out_label == IGNORE
        assert torch.equal(padded, (out_image == 0).all(0))
        # Bilinear sampling of the linear colour ramp gives the exact sampling position; the
        # nearest label is within half a source pixel of it (+ uint8 rounding: 0.05). Pixels
        # near the image border are left out: there the (antialiasing) filter is truncated.
        ly, lx = out_label // 100, out_label % 100
        inside = ~padded & (ly >= 3) & (ly < H - 3) & (lx >= 3) & (lx < W - 3)
        y, x = decode(out_image)
        assert ((y - ly)[inside].abs() <= 0.55 + 1e-9).all()
        assert ((x - lx)[inside].abs() <= 0.55 + 1e-9).all()
        checked += int(inside.sum())
    assert checked > 8 * 20 * 20 // 4


def test_resize_shrinks_with_antialias_and_keeps_labels_nearest():
    image, label = coordinate_pair()
    small_image, small_label = resize(image, label, (6, 8))
    assert small_image.shape == (3, 6, 8) and small_label.shape == (6, 8)
    assert set(small_label.flatten().tolist()) <= set(label.flatten().tolist())
    same = resize(image, label, (H, W))
    assert same[0] is image and same[1] is label
    # A 1-pixel checkerboard shrunk 3x is flat grey with antialiasing, not aliased stripes.
    checker = ((torch.arange(H).view(H, 1) + torch.arange(W)) % 2 * 255).to(torch.uint8)
    grey, _ = resize(checker.expand(3, H, W), label, (8, 8))
    assert ((grey.int() - 128).abs() <= 20).all()


def test_same_seed_same_output_different_seeds_differ():
    image, label = coordinate_pair()
    label = label % 19
    transform = TrainTransform((16, 12))
    torch.manual_seed(0)  # the global RNG must play no part
    a = transform(image, label, torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = transform(image, label, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [transform(image, label, torch.Generator().manual_seed(s)) for s in range(6, 10)]
    assert all(not torch.equal(a[0], o[0]) for o in others)


def test_photometric_steps_leave_the_label_alone():
    image, label = coordinate_pair()
    for step in (ColorJitter(0.5, 0.5, 0.5), GaussianBlur(p=1.0, sigma_range=(1.0, 2.0))):
        out_image, out_label = step(image, label, torch.Generator().manual_seed(3))
        assert torch.equal(out_label, label)
        assert out_image.dtype == torch.uint8 and out_image.shape == image.shape
        assert not torch.equal(out_image, image)
    assert ColorJitter(0, 0, 0)(image, label, torch.Generator())[0] is image
    assert GaussianBlur(p=0.0)(image, label, torch.Generator())[0] is image


def test_blur_keeps_flat_images_flat_and_handles_tiny_ones():
    flat = torch.full((3, 9, 7), 77, dtype=torch.uint8)
    blur = GaussianBlur(p=1.0, sigma_range=(2.0, 2.0))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(blur(flat, torch.zeros(9, 7, dtype=torch.long), g)[0], flat)
    tiny = torch.randint(0, 256, (3, 2, 1), dtype=torch.uint8)
    assert blur(tiny, torch.zeros(2, 1, dtype=torch.long), g)[0].shape == (3, 2, 1)


def test_pieces_compose_like_train_transform():
    image, label = coordinate_pair()
    pieces = Compose(
        [
            RandomScale((0.5, 2.0)),
            RandomCrop(16, IGNORE),
            RandomHorizontalFlip(0.5),
            ColorJitter(0.25, 0.25, 0.25),
            GaussianBlur(0.5, (0.1, 2.0)),
        ]
    )
    whole = TrainTransform(16, ignore_index=IGNORE)
    for seed in range(3):
        a = pieces(image, label, torch.Generator().manual_seed(seed))
        b = whole(image, label, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(crop_size=0), "crop_size"),
        (dict(crop_size=(8, 8, 8)), "crop_size"),
        (dict(crop_size=8, scale_range=(2.0, 1.0)), "scale_range"),
        (dict(crop_size=8, scale_range=(0.0, 1.0)), "scale_range"),
        (dict(crop_size=8, flip_prob=1.5), "RandomHorizontalFlip: p"),
        (dict(crop_size=8, brightness=-0.1), "brightness"),
        (dict(crop_size=8, blur_prob=-1), "GaussianBlur: p"),
        (dict(crop_size=8, blur_sigma=(0.0, 1.0)), "sigma_range"),
        (dict(crop_size=8, ignore_index=2.5), "ignore_index"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=f"TrainTransform: .*{pattern}"):
        TrainTransform(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="image must be uint8"):
        RandomCrop(4)(torch.zeros(3, 5, 5), torch.zeros(5, 5, dtype=torch.long), torch.Generator())
    with pytest.raises(ValueError, match="label must be"):
        RandomCrop(4)(
            torch.zeros(3, 5, 5, dtype=torch.uint8),
            torch.zeros(5, 6, dtype=torch.long),
            torch.Generator(),
        )


@pytest.mark.parametrize(
    "scale_range, crop",
    [
        ((1.3, 2.0), (40, 56)),
        ((1.0, 1.0), (24, 31)),
        ((0.5, 0.9), (20, 30)),
        ((1.5, 1.5), (90, 20)),
        ((0.5, 2.0), (33, 47)),
    ],
)
def test_fused_scale_crop_equals_scale_then_crop(scale_range, crop):
    """Enlargements interpolate only the crop window; shrinking and padding take the plain path.
    Same random draws, the same label, the image up to float rounding (one grey level)."""
    from gscnn_ops.data import RandomScaleCrop

    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 256, (3, 37, 53), generator=g, dtype=torch.uint8)
    label = torch.randint(0, 19, (37, 53), generator=g)
    plain = Compose([RandomScale(scale_range), RandomCrop(crop, ignore_index=255)])
    fused = RandomScaleCrop(scale_range, crop, ignore_index=255)
    exact = total = 0
    for seed in range(12):
        ga, gb = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        (ia, la), (ib, lb) = plain(image, label, ga), fused(image, label, gb)
        assert torch.equal(la, lb)
        assert ia.shape == ib.shape == (3, *crop)
        diff = (ia.int() - ib.int()).abs()
        assert diff.max() <= 1
        exact, total = exact + int((diff == 0).sum()), total + diff.numel()
        assert torch.equal(ga.get_state(), gb.get_state())  # the later steps draw the same
    assert exact >= 0.99 * total
