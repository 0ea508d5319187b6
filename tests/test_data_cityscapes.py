"""Cityscapes' folder layout and the labelIds -> train ids mapping, on a tiny tree in tmp_path."""

import pytest
import torch

from gscnn_ops.data import (
    CITYSCAPES_CLASSES,
    Cityscapes,
    DataError,
    build_dataset,
    labelids_to_trainids,
    write_png,
)
from gscnn_ops.data.cityscapes import LABELID_TO_TRAINID

# The official table (cityscapesScripts' labels.py): every id 0..33 -> train id or 255.
OFFICIAL = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}

H, W = 6, 8


def _add(root, split, city, stem, label_ids, size=(H, W), label=True):
    """One image and its labelIds file; the image's red channel holds the label id, so that
    tests can check which label came with which image."""
    h, w = size
    ids = torch.as_tensor(label_ids, dtype=torch.uint8).expand(h, w).contiguous()
    image = torch.stack([ids, torch.full_like(ids, 7), torch.full_like(ids, 9)])
    image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    write_png(image_path, image)
    label_path = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
    if label:
        write_png(label_path, ids if size == (H, W) else ids[:H, :W].contiguous())
    # Files of other kinds lie next to them in the real archives and must be ignored.
    write_png(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", image)
    return image_path, label_path


@pytest.fixture
def tree(tmp_path):
    _add(tmp_path, "train", "zurich", "zurich_000001_000019", 26)
    _add(tmp_path, "train", "aachen", "aachen_000001_000019", 7)
    _add(tmp_path, "train", "aachen", "aachen_000000_000019", 24)
    _add(tmp_path, "train", "zurich", "zurich_000000_000019", 0)
    _add(tmp_path, "val", "lindau", "lindau_000000_000019", 33)
    _add(tmp_path, "val", "frankfurt", "frankfurt_000000_000019", 11)
    return tmp_path


def test_mapping_of_every_label_id():
    assert LABELID_TO_TRAINID == OFFICIAL
    ids = torch.arange(34).view(2, 17)
    out = labelids_to_trainids(ids)
    assert out.dtype == torch.int64 and out.shape == ids.shape
    for label_id, train_id in zip(ids.flatten().tolist(), out.flatten().tolist()):
        assert train_id == OFFICIAL.get(label_id, 255), label_id
    assert sorted(set(out.flatten().tolist()) - {255}) == list(range(19))


def test_unknown_label_id_names_file_value_and_position():
    ids = torch.full((4, 5), 7)
    ids[2, 3] = 40
    ids[3, 0] = 40
    with pytest.raises(
        DataError,
        match=r"'some/file_gtFine_labelIds.png'.*2 pixel.*\[40\].*"
        r"row 2, column 3",
    ):
        labelids_to_trainids(ids, "some/file_gtFine_labelIds.png")


def test_parses_splits_in_sorted_order(tree):
    train = Cityscapes(tree, "train")
    assert [p[0].name for p in train.pairs] == [
        "aachen_000000_000019_leftImg8bit.png",
        "aachen_000001_000019_leftImg8bit.png",
        "zurich_000000_000019_leftImg8bit.png",
        "zurich_000001_000019_leftImg8bit.png",
    ]
    assert len(train) == 4 and len(Cityscapes(tree, "val")) == 2
    assert train.num_classes == 19 and train.ignore_index == 255
    assert tuple(train.classes) == CITYSCAPES_CLASSES and len(train.palette) == 19
    for image, label in train:
        assert image.shape == (3, H, W) and image.dtype == torch.uint8
        assert label.shape == (H, W) and label.dtype == torch.int64
        # The label is the train id of the label id stored in this very image's red channel.
        assert (label == OFFICIAL.get(int(image[0, 0, 0]), 255)).all()
    assert build_dataset("cityscapes", str(tree), "val")[1][1].unique().tolist() == [18]


def test_unknown_label_id_in_a_file(tree):
    _, label_path = _add(tree, "val", "lindau", "lindau_000001_000019", 40)
    data = Cityscapes(tree, "val")
    with pytest.raises(DataError, match=r"lindau_000001_000019_gtFine_labelIds.png.*\[40\]"):
        data[2]
    with pytest.raises(DataError, match="1 of 3 pair"):
        data.validate()


def test_errors_name_paths(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="root folder.*does-not-exist"):
        Cityscapes(tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError, match=r"split folder.*test.*\['train', 'val'\]"):
        Cityscapes(tree, "test")
    (tree / "leftImg8bit" / "empty" / "city").mkdir(parents=True)
    (tree / "gtFine" / "empty").mkdir()
    with pytest.raises(DataError, match="no '\\*_leftImg8bit.png' images"):
        Cityscapes(tree, "empty")
    image_path, label_path = _add(tree, "train", "bremen", "bremen_000000_000019", 7, label=False)
    with pytest.raises(DataError) as info:
        Cityscapes(tree, "train")
    assert str(image_path) in str(info.value) and str(label_path) in str(info.value)


def test_size_mismatch_names_both_files(tree):
    image_path, label_path = _add(tree, "val", "ulm", "ulm_000000_000019", 7, size=(H + 2, W))
    data = Cityscapes(tree, "val")
    index = [p[0] for p in data.pairs].index(image_path)
    with pytest.raises(DataError) as info:
        data[index]
    message = str(info.value)
    assert str(image_path) in message and str(label_path) in message
    assert f"{W}x{H + 2}" in message and f"{W}x{H}" in message
