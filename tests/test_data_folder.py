"""FolderDataset: users' images/ and masks/ with a classes file, and its error messages."""

import pytest
import torch
from PIL import Image

from gscnn_ops.data import (
    DataError,
    FolderDataset,
    SegmentationSamples,
    TrainTransform,
    build_dataset,
    default_palette,
    read_classes_file,
    write_png,
)

H, W = 8, 10


def _pair(root, stem, mask_values, ext=".png", split=None, size=(H, W), palette=None):
    """An image (red channel = 10 * mask value, to tell pairs apart) and its mask."""
    sub = f"/{split}" if split else ""
    mask = torch.as_tensor(mask_values, dtype=torch.uint8).expand(*size).contiguous()
    image = torch.stack([mask * 10, mask, mask]).to(torch.uint8)
    image_path = root / f"images{sub}" / f"{stem}{ext}"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(image_path)
    mask_path = root / f"masks{sub}" / f"{stem}.png"
    write_png(mask_path, mask, palette=palette)
    return image_path, mask_path


def _binary(root):
    (root / "classes.txt").write_text("background\nforeground\n")
    checker = (torch.arange(H).view(H, 1) + torch.arange(W)) % 2
    _pair(root, "b", checker)
    _pair(root, "a", 1 - checker, ext=".jpg")
    _pair(root, "c", torch.full((H, W), 255), ext=".bmp")  # all ignore is allowed
    return root


def test_binary_dataset(tmp_path):
    data = FolderDataset(_binary(tmp_path))
    assert data.num_classes == 2 and data.classes == ["background", "foreground"]
    assert data.palette == default_palette(2) and data.ignore_index == 255
    assert [p[0].name for p in data.pairs] == ["a.jpg", "b.png", "c.bmp"]
    image, label = data[1]
    assert image.shape == (3, H, W) and image.dtype == torch.uint8
    assert label.dtype == torch.int64 and set(label.unique().tolist()) == {0, 1}
    assert torch.equal(image[0].long(), label * 10)  # png: lossless, the pair matches
    assert data[2][1].unique().tolist() == [255]
    assert data.validate().tolist() == [H * W, H * W]


def test_five_classes_with_colours_and_palette_masks(tmp_path):
    (tmp_path / "my_classes.txt").write_text(
        "# name r g b\n\nsky 70 130 180\ntraffic light 250 170 30  # spaces in names\n"
        "road 128 64 128\ncar 0 0 142\nlane 2 1 2 3\n"
    )
    colours = [[70, 130, 180], [250, 170, 30], [128, 64, 128], [0, 0, 142], [1, 2, 3]]
    values = torch.arange(H * W).view(H, W) % 5
    values[0, 0] = 255
    # A palette-mode mask whose colours are not the indices: the indices are the labels.
    _pair(tmp_path, "x", values, split="train", palette=[[255, 0, 0]] * 256)
    _pair(tmp_path, "y", torch.full((H, W), 4), split="val")
    data = FolderDataset(tmp_path, split="train", classes_file=tmp_path / "my_classes.txt")
    assert data.classes == ["sky", "traffic light", "road", "car", "lane 2"]
    assert data.palette == colours and data.num_classes == 5
    assert Image.open(data.pairs[0][1]).mode == "P"
    assert torch.equal(data[0][1], values.long())
    assert data.validate().sum() == H * W - 1
    val = build_dataset("folder", tmp_path, "val", classes_file=tmp_path / "my_classes.txt")
    assert len(val) == 1 and val[0][1].unique().tolist() == [4]


def test_flat_layout_serves_every_split_in_build_dataset(tmp_path):
    _binary(tmp_path)
    for split in ("train", "val"):
        assert len(build_dataset("folder", str(tmp_path), split)) == 3
    with pytest.raises(FileNotFoundError, match=r"split folder.*train.*\[\]"):
        FolderDataset(tmp_path, split="train")  # the class itself is strict


def test_classes_file_rules(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("only\n")
    assert read_classes_file(path) == (["only"], None)
    for text, pattern in [
        ("\n# nothing\n", "names no classes"),
        ("a 1 2 3\nb\n", "colours for 1 of 2"),
        ("a 1 2 300\n", "line 1.*0..255"),
        ("a\nb\na\n", r"more than once: \['a'\]"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError, match=pattern):
            read_classes_file(path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_classes_file(tmp_path / "missing.txt")


def test_errors_with_clear_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="root folder.*nowhere"):
        FolderDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        FolderDataset(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(FileNotFoundError, match="image folder.*images"):
        FolderDataset(tmp_path)
    (tmp_path / "images" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="mask folder.*masks"):
        FolderDataset(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"no images.*subfolders \['train'\]"):
        FolderDataset(tmp_path)
    with pytest.raises(ValueError, match="ignore_index.*0..1"):
        FolderDataset(tmp_path, ignore_index=1)


def test_image_without_mask_and_mask_without_image(tmp_path):
    _binary(tmp_path)
    image_path, mask_path = _pair(tmp_path, "d", 0)
    mask_path.unlink()
    Image.new("L", (W, H)).save(tmp_path / "masks" / "d.jpg")
    with pytest.raises(DataError, match=r"1 of 4 image\(s\) have no label file") as info:
        FolderDataset(tmp_path)
    message = str(info.value)
    assert str(image_path) in message and str(mask_path) in message
    assert "must be PNG" in message
    image_path.unlink()
    write_png(tmp_path / "masks" / "orphan.png", torch.zeros(H, W, dtype=torch.uint8))
    with pytest.warns(UserWarning, match=r"(?s)1 mask.*no image.*orphan.png"):
        assert len(FolderDataset(tmp_path)) == 3


def test_mask_values_and_sizes_checked_on_load_and_by_validate(tmp_path):
    _binary(tmp_path)
    _, bad_mask = _pair(tmp_path, "zero255", [[0, 255, 7]], size=(H, 3))
    image_path, small_mask = _pair(tmp_path, "small", 0)
    write_png(small_mask, torch.zeros(H - 1, W, dtype=torch.uint8))
    data = FolderDataset(tmp_path)
    names = [p[0].stem for p in data.pairs]
    with pytest.raises(DataError) as info:
        data[names.index("zero255")]
    message = str(info.value)
    assert str(bad_mask) in message and "[7]" in message and "0/255" in message
    with pytest.raises(DataError, match=f"{image_path}.*{W}x{H}.*{small_mask}.*{W}x{H - 1}"):
        data[names.index("small")]
    with pytest.raises(DataError, match=r"2 of 5 pair") as info:
        data.validate()
    assert "zero255.png" in str(info.value) and "small.png" in str(info.value)


def test_validate_warns_about_absent_classes(tmp_path):
    (tmp_path / "classes.txt").write_text("background\nforeground\n")
    _pair(tmp_path, "a", [[0, 255]], size=(H, 2))  # a 0/255 mask read with ignore_index 255
    with pytest.warns(UserWarning, match=r"\['foreground'\] occur in no mask.*0/255"):
        FolderDataset(tmp_path).validate()


def test_rgb_masks_are_rejected(tmp_path):
    _binary(tmp_path)
    rgb_mask = tmp_path / "masks" / "b.png"
    Image.new("RGB", (W, H), (255, 0, 0)).save(rgb_mask)
    data = FolderDataset(tmp_path)
    with pytest.raises(DataError, match="not colours") as info:
        data[1]
    assert str(rgb_mask) in str(info.value)


def test_corrupt_image_names_the_file(tmp_path):
    _binary(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="b.png"):
        FolderDataset(tmp_path)[1]


def test_feeds_segmentation_samples(tmp_path):
    data = build_dataset("folder", _binary(tmp_path))
    samples = SegmentationSamples(data, TrainTransform(6, scale_range=(0.8, 1.2)), seed=1)
    assert samples.num_classes == 2
    sample = samples[0]
    assert sample["image"].shape == (3, 6, 6) and sample["image"].dtype == torch.float32
    assert sample["canny"].shape == (1, 6, 6) and sample["canny"].dtype == torch.float32
    assert set(sample["canny"].unique().tolist()) <= {0.0, 1.0}
    assert sample["label"].shape == (6, 6) and sample["label"].dtype == torch.int64
    assert sample["index"] == 0


def test_images_sharing_a_name_are_ambiguous(tmp_path):
    _binary(tmp_path)
    _pair(tmp_path, "b", 0, ext=".tif")  # b.png exists already: which one does b.png mask?
    with pytest.raises(DataError, match=r"share the names \['b'\]"):
        FolderDataset(tmp_path)
