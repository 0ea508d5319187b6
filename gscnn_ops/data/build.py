"""Datasets by name, as the command line selects them (``--dataset NAME --data-root PATH``)."""

from typing import Optional

from .cityscapes import Cityscapes
from .folder import FolderDataset, resolve_folder_split
from .synthetic import SyntheticStreets

DATASETS = ("synthetic", "cityscapes", "folder")

# The synthetic splits are disjoint sets of scenes: each split has its own seed offset.
_SYNTHETIC_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def build_dataset(
    name: str,
    root: Optional[str] = None,
    split: str = "train",
    *,
    length: Optional[int] = None,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    **options,
):
    """A dataset of (image uint8 (3, H, W), label int64 (H, W)) pairs with ``num_classes``,
    ``ignore_index``, ``classes`` and ``palette`` attributes.

    - "synthetic": :class:`SyntheticStreets` (no files; ``length`` scenes of ``height`` x
      ``width``, 64 for "train" and 16 otherwise by default; ``seed`` picks the scenes);
    - "cityscapes": Cityscapes' own folder layout under ``root`` (see :class:`Cityscapes`);
    - "folder": images/ and masks/ under ``root`` (see :class:`FolderDataset`); options
      ``classes_file`` and ``ignore_index``. ``split`` selects ``images/{split}`` and
      ``masks/{split}``; when ``images/{split}`` does not exist but ``images/`` holds images
      itself, the flat layout is used, i.e. the *same* files for every split (so pass a
      separate root, or make split folders, to evaluate on held-out data).

    Examples:
        >>> from gscnn_ops.data import build_dataset
        >>> ds = build_dataset("synthetic", split="val", length=2, height=32, width=64)
        >>> len(ds), ds.num_classes, ds[0][0].shape
        (2, 19, torch.Size([3, 32, 64]))
    """
    if name == "synthetic":
        if split not in _SYNTHETIC_SPLIT_SEEDS:
            raise ValueError(
                f"build_dataset: synthetic split must be one of "
                f"{sorted(_SYNTHETIC_SPLIT_SEEDS)}, got {split!r}"
            )
        if length is None:
            length = 64 if split == "train" else 16
        return SyntheticStreets(
            length, height, width, seed=seed * 3 + _SYNTHETIC_SPLIT_SEEDS[split]
        )
    if name in ("cityscapes", "folder"):
        if root is None:
            raise ValueError(
                f"build_dataset: the {name!r} dataset needs a root folder (--data-root)"
            )
        if name == "cityscapes":
            if options:
                raise ValueError(
                    f"build_dataset: the 'cityscapes' dataset takes no options, "
                    f"got {sorted(options)}"
                )
            return Cityscapes(root, split)
        unknown = sorted(set(options) - {"classes_file", "ignore_index"})
        if unknown:
            raise ValueError(
                f"build_dataset: the 'folder' dataset takes the options "
                f"classes_file and ignore_index, got {unknown}"
            )
        return FolderDataset(root, resolve_folder_split(root, split), **options)
    raise ValueError(f"build_dataset: unknown dataset {name!r}; choose one of {DATASETS}")
