"""Users' own data: a folder of images and a folder of masks with matching file names.

Layout under ``root`` (``{split}/`` only when a split is given)::

    classes.txt                 one class per line (see :func:`read_classes_file`)
    images/{split}/NAME.jpg     any of .png .jpg .jpeg .bmp .tif .tiff
    masks/{split}/NAME.png      single-channel PNG of class indices 0..K-1 (or ignore_index)

Only the files directly in those folders are used (no recursion), so that ``images/`` can hold
both a flat set of files and per-split subfolders without mixing them. Masks must be PNG:
lossy formats (JPEG) change pixel values at class borders, i.e. they invent labels.

Masks without an image are reported with a warning, not an error: they cannot break training
(nothing reads them), whereas an image without a mask is an error because it could only be
dropped silently. Mask values are checked each time a pair is loaded; :meth:`FolderDataset.validate`
checks every pair up front.
"""

import glob
import warnings
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple

from torch import Tensor

from .classes import IGNORE_INDEX, default_palette
from .errors import DataError
from .paired import PairedFiles, list_files, listing, pair_files, require_dir, subfolders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = ".png"
CLASSES_FILE = "classes.txt"

_ZERO_255_HINT = (
    "masks must hold class indices (binary masks stored as 0/255 must be converted "
    "to 0/1, or 255 declared as ignore_index)"
)


def read_classes_file(path) -> Tuple[List[str], Optional[List[List[int]]]]:
    """Class names, and their RGB colours if the file gives them, from a text file.

    One class per line, in index order: ``name`` or ``name r g b`` (0..255 each; a line is read
    as coloured when it has at least four words and the last three are integers, so names may
    contain spaces, e.g. ``traffic light 250 170 30``). Blank lines and ``#`` comments are
    skipped. Either every class has a colour or none has (then the palette is None).

    Examples:
        >>> import os, tempfile
        >>> from gscnn_ops.data import read_classes_file
        >>> path = os.path.join(tempfile.mkdtemp(), "classes.txt")
        >>> with open(path, "w") as f:
        ...     _ = f.write("background 0 0 0\\ntraffic light 250 170 30\\n")
        >>> read_classes_file(path)
        (['background', 'traffic light'], [[0, 0, 0], [250, 170, 30]])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"read_classes_file: no classes file '{path}'; write one class name per line (in "
            f"index order, optionally followed by an RGB colour: 'road 128 64 128')"
        )
    names, colours = [], []
    text = path.read_text(encoding="utf-8-sig")  # -sig: the BOM some Windows editors write
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) >= 4 and all(w.lstrip("+-").isdigit() for w in words[-3:]):
            colour = [int(w) for w in words[-3:]]
            if not all(0 <= c <= 255 for c in colour):
                raise DataError(
                    f"read_classes_file: '{path}' line {number}: colour values must "
                    f"be 0..255, got {colour}"
                )
            names.append(" ".join(words[:-3]))
            colours.append(colour)
        else:
            names.append(" ".join(words))
            colours.append(None)
    if not names:
        raise DataError(
            f"read_classes_file: '{path}' names no classes; write one class name "
            f"per line (blank lines and '#' comments are skipped)"
        )
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(f"read_classes_file: '{path}' names classes more than once: {duplicates}")
    given = [c is not None for c in colours]
    if any(given) and not all(given):
        raise DataError(
            f"read_classes_file: '{path}' gives colours for {sum(given)} of "
            f"{len(names)} classes; give 'name r g b' on every line or on none"
        )
    return names, (colours if all(given) else None)


def resolve_folder_split(root, split: Optional[str]) -> Optional[str]:
    """The ``split`` argument for :class:`FolderDataset` as :func:`build_dataset` picks it:
    ``split`` when ``root/images/{split}`` exists, else None (the flat layout, i.e. the same
    files for every split) when ``root/images`` holds images itself. Otherwise ``split`` is
    kept, so that the dataset reports the missing split folder and the splits that exist."""
    images = Path(root) / "images"
    if split is None or (images / split).is_dir():
        return split
    if images.is_dir() and list_files(images, IMAGE_SUFFIXES):
        return None
    return split


class FolderDataset(PairedFiles):
    """(image, mask) pairs from ``root/images`` and ``root/masks`` (``/{split}`` when ``split``
    is given), paired by file stem and sorted by name; classes from ``classes_file`` (default
    ``root/classes.txt``), any number >= 1. Labels are int64 class indices 0..K-1, with
    ``ignore_index`` (default 255) allowed in the masks for "ignore".

    Examples:
        >>> import os, tempfile, torch
        >>> from gscnn_ops.data import FolderDataset, write_png
        >>> root = tempfile.mkdtemp()
        >>> with open(os.path.join(root, "classes.txt"), "w") as f:
        ...     _ = f.write("background\\ndisc\\n")
        >>> image = torch.zeros(3, 6, 9, dtype=torch.uint8)
        >>> write_png(os.path.join(root, "images", "a.png"), image)
        >>> write_png(os.path.join(root, "masks", "a.png"), torch.ones(6, 9, dtype=torch.uint8))
        >>> ds = FolderDataset(root)
        >>> len(ds), ds.classes, ds[0][1].unique().tolist()
        (1, ['background', 'disc'], [1])
    """

    def __init__(
        self, root, split: Optional[str] = None, classes_file=None, ignore_index: int = IGNORE_INDEX
    ):
        owner = "FolderDataset" + (f"(split={split!r})" if split is not None else "")
        root = require_dir(root, owner, "root folder")
        self.classes, palette = read_classes_file(
            root / CLASSES_FILE if classes_file is None else classes_file
        )
        self.num_classes = len(self.classes)
        self.palette = palette if palette is not None else default_palette(self.num_classes)
        if not isinstance(ignore_index, int) or 0 <= ignore_index < self.num_classes:
            raise ValueError(
                f"{owner}: ignore_index must be an int outside the class indices "
                f"0..{self.num_classes - 1}, got {ignore_index!r}"
            )
        self.ignore_index = ignore_index
        self.root, self.split = root, split

        image_dir, mask_dir = self._split_dirs(root, split, owner)
        images = list_files(image_dir, IMAGE_SUFFIXES)
        if not images:
            found = subfolders(image_dir)
            raise DataError(
                f"{owner}: no images ({', '.join(IMAGE_SUFFIXES)}) in '{image_dir}'"
                + (f"; it has the subfolders {found}: pass one of them as split" if found else "")
            )
        stems = [p.stem for p in images]
        clashes = sorted(s for s, count in Counter(stems).items() if count > 1)  # linear time
        if clashes:
            raise DataError(
                f"{owner}: several images in '{image_dir}' share the names "
                f"{clashes} (e.g. a.png and a.jpg); each name must be unique so "
                f"that it picks one mask"
            )

        def hint(image: Path, mask: Path) -> str:
            others = [
                p.name
                for p in mask_dir.glob(glob.escape(mask.stem) + ".*")
                if p.suffix.lower() != MASK_SUFFIX
            ]
            return (
                f" (found {others}, but masks must be PNG: lossy formats change class "
                f"indices at borders)"
                if others
                else ""
            )

        masks = {p.stem: p for p in list_files(mask_dir, [MASK_SUFFIX])}  # any case of .png
        self.pairs = pair_files(
            images, lambda p: masks.get(p.stem, mask_dir / (p.stem + MASK_SUFFIX)), owner, hint
        )
        orphans = sorted(masks[s].name for s in set(masks) - set(stems))
        if orphans:
            warnings.warn(
                f"{owner}: {len(orphans)} mask(s) in '{mask_dir}' have no image and "
                f"are not used:\n" + listing(orphans),
                stacklevel=2,
            )

    @staticmethod
    def _split_dirs(root: Path, split: Optional[str], owner: str) -> Tuple[Path, Path]:
        image_root = require_dir(root / "images", owner, "image folder")
        mask_root = require_dir(root / "masks", owner, "mask folder")
        if split is None:
            return image_root, mask_root
        if not (image_root / split).is_dir():
            raise FileNotFoundError(
                f"{owner}: split folder '{image_root / split}' does not "
                f"exist; the splits present are {subfolders(image_root)}"
            )
        return image_root / split, require_dir(mask_root / split, owner, "mask folder")

    def convert_label(self, label: Tensor, path: Path) -> Tensor:
        bad = ((label < 0) | (label >= self.num_classes)) & (label != self.ignore_index)
        if bad.any():
            values = label[bad].unique().tolist()
            y, x = (int(v) for v in bad.nonzero()[0].tolist())
            raise DataError(
                f"FolderDataset: mask '{path}' holds values {values[:10]} at {int(bad.sum())} "
                f"pixel(s) (first at row {y}, column {x}); expected class indices "
                f"0..{self.num_classes - 1} ({self.num_classes} classes) or the ignore_index "
                f"{self.ignore_index}: {_ZERO_255_HINT}"
            )
        return label

    def validate(self) -> Tensor:
        """As :meth:`PairedFiles.validate`, and warn about classes that occur in no mask (with
        the 0/255 hint: with ignore_index 255, a 0/255 binary mask reads as background+ignore)."""
        counts = super().validate()
        absent = [self.classes[k] for k in range(self.num_classes) if counts[k] == 0]
        if absent:
            warnings.warn(
                f"FolderDataset.validate: the classes {absent} occur in no mask; {_ZERO_255_HINT}",
                stacklevel=2,
            )
        return counts
