"""Reading images and label maps: modes, and errors that name the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from gscnn_ops.data import DataError, read_image, read_label, write_png


def _save(path, array, mode=None):
    img = Image.fromarray(np.asarray(array))
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    img.save(path)
    return path


def test_write_and_read_rgb_roundtrip(tmp_path):
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    path = tmp_path / "deep" / "er" / "a.png"  # parent folders are created
    write_png(path, image)
    out = read_image(path)
    assert out.dtype == torch.uint8 and torch.equal(out, image)


def test_read_image_expands_grayscale_and_drops_alpha(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(_save(tmp_path / "g.png", gray))
    assert out.shape == (3, 3, 4)
    assert all(torch.equal(out[c], torch.from_numpy(gray)) for c in range(3))
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, colour kept
    out = read_image(_save(tmp_path / "a.png", rgba))
    assert out.shape == (3, 2, 3) and (out[0] == 200).all() and (out[1:] == 0).all()


def test_read_image_converts_palette_to_colours(tmp_path):
    indices = torch.tensor([[0, 1], [1, 0]], dtype=torch.uint8)
    write_png(tmp_path / "p.png", indices, palette=[[10, 20, 30], [200, 100, 50]])
    out = read_image(tmp_path / "p.png")
    assert out[:, 0, 0].tolist() == [10, 20, 30] and out[:, 0, 1].tolist() == [200, 100, 50]


def test_read_label_modes(tmp_path):
    values = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    assert read_label(_save(tmp_path / "l.png", values)).tolist() == values.tolist()
    # Palette mode: the indices are the labels, whatever colours the palette gives them.
    write_png(tmp_path / "p.png", torch.from_numpy(values), palette=[[255, 255, 255]] * 256)
    assert Image.open(tmp_path / "p.png").mode == "P"
    label = read_label(tmp_path / "p.png")
    assert label.dtype == torch.int64 and label.tolist() == values.tolist()
    wide = np.array([[0, 1000], [26001, 65535]], dtype=np.uint16)
    assert read_label(_save(tmp_path / "w.png", wide)).tolist() == wide.tolist()
    bits = np.array([[True, False]])
    assert read_label(_save(tmp_path / "b.png", bits)).tolist() == [[1, 0]]


@pytest.mark.parametrize("channels", [3, 4])
def test_read_label_rejects_colour_masks(tmp_path, channels):
    path = _save(tmp_path / "rgb.png", np.zeros((2, 2, channels), dtype=np.uint8))
    with pytest.raises(DataError, match="class indices, not colours") as info:
        read_label(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_label(tmp_path / "nope.png")


def test_garbage_and_truncated_files_name_the_path(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image" * 10)
    for read in (read_image, read_label):
        with pytest.raises(DataError, match="garbage.png"):
            read(garbage)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)  # noise: big, incompressible
    write_png(tmp_path / "full.png", image)
    data = (tmp_path / "full.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.png") as info:
        read_image(truncated)
    assert isinstance(info.value, ValueError)  # DataError is a ValueError


def test_write_png_rejects_wrong_tensors(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "x.png", torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(3, H, W\)"):
        write_png(tmp_path / "x.png", torch.zeros(4, 2, 2, dtype=torch.uint8))
