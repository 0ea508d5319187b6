"""Cityscapes in its own folder layout, with the official labelIds mapped to the 19 train ids.

Expected under ``root`` (as unpacked from the official leftImg8bit and gtFine archives)::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png

The ``*_labelIds.png`` files hold the 34 official label ids (0..33); training uses 19 of them,
mapped by :func:`labelids_to_trainids` (the table of cityscapesScripts' ``labels.py``), and
the rest become the ignore index 255.
"""

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from .classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX
from .errors import DataError
from .paired import PairedFiles, list_files, pair_files, require_dir, subfolders

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

# Official label id -> train id for the 19 evaluated classes (cityscapesScripts' labels.py).
LABELID_TO_TRAINID = {
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
NUM_LABELIDS = 34  # ids 0..33; -1 ("license plate") is never stored in the PNGs

_LUT = torch.full((NUM_LABELIDS,), IGNORE_INDEX, dtype=torch.long)
for _label_id, _train_id in LABELID_TO_TRAINID.items():
    _LUT[_label_id] = _train_id


_TRAINID_TO_LABELID = torch.zeros(len(LABELID_TO_TRAINID), dtype=torch.uint8)
for _label_id, _train_id in LABELID_TO_TRAINID.items():
    _TRAINID_TO_LABELID[_train_id] = _label_id


def trainids_to_labelids(prediction: Tensor) -> Tensor:
    """Predicted train ids 0..18 (integer (..., H, W)) -> uint8 official label ids, as the
    Cityscapes benchmark server and ``evalPixelLevelSemanticLabeling`` read them.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data.cityscapes import trainids_to_labelids
        >>> trainids_to_labelids(torch.tensor([[0, 1, 18]]))
        tensor([[ 7,  8, 33]], dtype=torch.uint8)
    """
    if prediction.is_floating_point() or prediction.dtype == torch.bool:
        raise TypeError(
            f"trainids_to_labelids: prediction must be an integer tensor, got {prediction.dtype}"
        )
    if prediction.numel() and (prediction.min() < 0 or prediction.max() >= len(LABELID_TO_TRAINID)):
        raise ValueError(
            f"trainids_to_labelids: train ids must be in 0..{len(LABELID_TO_TRAINID) - 1}, "
            f"got values in {int(prediction.min())}..{int(prediction.max())}"
        )
    return _TRAINID_TO_LABELID.to(prediction.device)[prediction.long()]


def labelids_to_trainids(label: Tensor, path: Optional[Path] = None) -> Tensor:
    """Cityscapes labelIds (integer (H, W), values 0..33) -> int64 train ids 0..18, 255 for the
    ids that are not trained on. Values outside 0..33 raise DataError naming ``path`` (if
    given), the values, how many pixels hold them and where the first one is: they mean the
    wrong file was picked (e.g. ``*_instanceIds`` or ``*_labelTrainIds``).

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import labelids_to_trainids
        >>> labelids_to_trainids(torch.tensor([[7, 8, 0, 33]]))  # road, sidewalk, -, bicycle
        tensor([[  0,   1, 255,  18]])
    """
    label = label.long()
    bad = (label < 0) | (label >= NUM_LABELIDS)
    if bad.any():
        values = label[bad].unique().tolist()
        y, x = (int(v) for v in bad.nonzero()[0].tolist()[-2:])
        where = f"'{path}'" if path is not None else "the label map"
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise DataError(
            f"labelids_to_trainids: {where} holds {int(bad.sum())} pixel(s) with values "
            f"[{shown}] outside the Cityscapes labelIds 0..{NUM_LABELIDS - 1} (first at row {y}, "
            f"column {x}); expected a *{LABEL_SUFFIX} file, not *_instanceIds, *_labelTrainIds "
            f"or *_color"
        )
    return _LUT[label]


class Cityscapes(PairedFiles):
    """The (image, label) pairs of one split of Cityscapes (fine annotations), sorted by city
    then file name. Labels are train ids 0..18 with 255 for ignore.

    Examples:
        >>> import os, tempfile, torch
        >>> from gscnn_ops.data import Cityscapes, write_png
        >>> root = tempfile.mkdtemp()
        >>> write_png(os.path.join(root, "leftImg8bit/val/ulm/ulm_000000_000019_leftImg8bit.png"),
        ...           torch.zeros(3, 8, 16, dtype=torch.uint8))
        >>> write_png(os.path.join(root, "gtFine/val/ulm/ulm_000000_000019_gtFine_labelIds.png"),
        ...           torch.full((8, 16), 7, dtype=torch.uint8))  # label id 7: road
        >>> image, label = Cityscapes(root, "val")[0]
        >>> image.shape, label.unique().tolist()
        (torch.Size([3, 8, 16]), [0])
    """

    num_classes = len(CITYSCAPES_CLASSES)
    ignore_index = IGNORE_INDEX
    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, root, split: str = "train"):
        owner = f"Cityscapes(split={split!r})"
        if not isinstance(split, str):
            raise ValueError(
                f"{owner}: split must be the name of a folder of leftImg8bit/ "
                f"(e.g. 'train', 'val'), got {split!r}"
            )
        root = require_dir(root, owner, "root folder")
        images_root = require_dir(
            root / "leftImg8bit", owner, "image folder (leftImg8bit/ of the official archive)"
        )
        image_dir = images_root / split
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"{owner}: split folder '{image_dir}' does not exist; the "
                f"splits present are {subfolders(images_root)}"
            )
        label_dir = require_dir(
            root / "gtFine" / split, owner, "label folder (gtFine/ of the official archive)"
        )
        images = [
            p
            for city in subfolders(image_dir)
            for p in list_files(image_dir / city, [".png"])
            if p.name.endswith(IMAGE_SUFFIX)
        ]
        if not images:
            raise DataError(
                f"{owner}: no '*{IMAGE_SUFFIX}' images in the city folders of '{image_dir}'"
            )

        def label_for(image: Path) -> Path:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            return label_dir / image.parent.name / (stem + LABEL_SUFFIX)

        self.root, self.split = root, split
        self.pairs = pair_files(images, label_for, owner)

    def convert_label(self, label: Tensor, path: Path) -> Tensor:
        return labelids_to_trainids(label, path)
