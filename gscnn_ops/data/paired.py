"""What file-backed datasets share: folder checks, pairing images with label files, loading a
pair with its size check, and an up-front :meth:`PairedFiles.validate` pass.

:class:`~gscnn_ops.data.Cityscapes` and :class:`~gscnn_ops.data.FolderDataset` differ only in
where their files are and in how a stored label becomes train ids (a lookup table, or a range
check); both are subclasses of :class:`PairedFiles` that give the pairs and a
:meth:`~PairedFiles.convert_label`.
"""

from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .errors import DataError
from .io import read_image, read_label

Pair = Tuple[Path, Path]

# How many problems an error message lists before it says "and N more".
_MAX_LISTED = 10


def require_dir(path, owner: str, what: str) -> Path:
    """``path`` as a Path if it is a folder; else FileNotFoundError saying what it should be."""
    path = Path(path)
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{owner}: {what} '{path}' {state}")
    return path


def subfolders(path: Path) -> List[str]:
    """Names of the folders in ``path``, sorted (for "which splits exist" hints)."""
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def list_files(folder: Path, suffixes: Iterable[str]) -> List[Path]:
    """The files directly in ``folder`` whose suffix is one of ``suffixes`` (any case), sorted
    by name so that indices mean the same files on every machine."""
    suffixes = {s.lower() for s in suffixes}
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def listing(items: Sequence, limit: int = _MAX_LISTED) -> str:
    """Up to ``limit`` items, one per line, then how many more there are."""
    lines = [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def pair_files(
    images: Sequence[Path],
    label_for: Callable[[Path], Path],
    owner: str,
    hint: Optional[Callable[[Path, Path], str]] = None,
) -> List[Pair]:
    """``[(image, label_for(image))]`` for every image; DataError naming each image whose label
    file is missing together with the path where it was expected (``hint`` may add a reason,
    e.g. "a JPEG mask was found instead")."""
    pairs = [(image, label_for(image)) for image in images]
    missing = [(i, l) for i, l in pairs if not l.is_file()]
    if missing:
        lines = [
            f"image '{i}' has no label file '{l}'" + (hint(i, l) if hint else "")
            for i, l in missing
        ]
        raise DataError(
            f"{owner}: {len(missing)} of {len(pairs)} image(s) have no label file:\n"
            + listing(lines)
        )
    return pairs


class PairedFiles(torch.utils.data.Dataset):
    """A dataset of (image, label) file pairs: item i reads ``pairs[i]``, checks that image
    and label have the same size and returns ``(image uint8 (3, H, W), convert_label(label))``.

    Subclasses set ``pairs`` and the ``num_classes``, ``ignore_index``, ``classes`` and
    ``palette`` attributes, and override :meth:`convert_label`.

    Examples:
        >>> from gscnn_ops.data import Cityscapes, FolderDataset, PairedFiles
        >>> issubclass(Cityscapes, PairedFiles) and issubclass(FolderDataset, PairedFiles)
        True
    """

    pairs: List[Pair]
    num_classes: int
    ignore_index: int

    def convert_label(self, label: Tensor, path: Path) -> Tensor:
        """Stored label values -> train ids (int64, ``ignore_index`` for ignore); raise
        DataError naming ``path`` for values that are not allowed."""
        return label

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        if not -len(self.pairs) <= index < len(self.pairs):
            raise IndexError(
                f"{type(self).__name__}: index {index} out of range [0, {len(self.pairs)})"
            )
        image_path, label_path = self.pairs[index]
        image, label = read_image(image_path), read_label(label_path)
        if tuple(image.shape[1:]) != tuple(label.shape):
            # The sizes are checked on every load (it is free once both are decoded) rather
            # than at construction, which would have to open every file of the dataset.
            raise DataError(
                f"{type(self).__name__}: image '{image_path}' is "
                f"{image.shape[2]}x{image.shape[1]} (WxH) but its label "
                f"'{label_path}' is {label.shape[1]}x{label.shape[0]}; they must "
                f"have the same size"
            )
        return image, self.convert_label(label, label_path)

    def validate(self) -> Tensor:
        """Load every pair once (decoding, sizes, label values) and raise one DataError that
        lists all the bad pairs, rather than failing mid-epoch on the first one. Returns the
        pixel count of each class (int64 (num_classes,)), which shows classes that never occur.
        """
        counts = torch.zeros(self.num_classes, dtype=torch.long)
        problems = []
        for i in range(len(self)):
            try:
                _, label = self[i]
            except (DataError, FileNotFoundError) as e:
                problems.append(str(e))
                continue
            valid = label[label != self.ignore_index]
            counts += torch.bincount(valid.flatten(), minlength=self.num_classes)
        if problems:
            raise DataError(
                f"{type(self).__name__}.validate: {len(problems)} of {len(self)} "
                f"pair(s) cannot be used:\n" + listing(problems)
            )
        return counts
