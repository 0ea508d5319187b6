"""Datasets by name, as the command line selects them (``--dataset NAME --data-root PATH``)."""

from typing import Optional

from .synthetic import SyntheticStreets

DATASETS = ("synthetic", "cityscapes", "folder")

# The synthetic splits are disjoint sets of scenes: each split has its own seed offset.
_SYNTHETIC_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def build_dataset(name: str, root: Optional[str] = None, split: str = "train", *,
                  length: Optional[int] = None, height: int = 128, width: int = 256, seed: int = 0,
                  **options):
    """A dataset of (image uint8 (3, H, W), label int64 (H, W)) pairs with ``num_classes``,
    ``ignore_index``, ``classes`` and ``palette`` attributes.

    - "synthetic": :class:`SyntheticStreets` (no files; ``length`` scenes of ``height`` x
      ``width``, 64 for "train" and 16 otherwise by default; ``seed`` picks the scenes);
    - "cityscapes": Cityscapes' own folder layout under ``root``;
    - "folder": images/ and masks/ under ``root`` (see :class:`FolderDataset`).
    """
    if name == "synthetic":
        if split not in _SYNTHETIC_SPLIT_SEEDS:
            raise ValueError(f"build_dataset: synthetic split must be one of "
                             f"{sorted(_SYNTHETIC_SPLIT_SEEDS)}, got {split!r}")
        if length is None:
            length = 64 if split == "train" else 16
        return SyntheticStreets(length, height, width,
                                seed=seed * 3 + _SYNTHETIC_SPLIT_SEEDS[split])
    if name in ("cityscapes", "folder"):
        if root is None:
            raise ValueError(f"build_dataset: the {name!r} dataset needs a root folder "
                             f"(--data-root)")
        raise NotImplementedError(f"build_dataset: {name!r} is not available yet")
    raise ValueError(f"build_dataset: unknown dataset {name!r}; choose one of {DATASETS}")
