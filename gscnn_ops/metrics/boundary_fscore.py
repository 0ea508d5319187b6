"""Boundary F-score of semantic segmentation (the DAVIS measure, as Gated-SCNN evaluates it).

Per image and class k, with the pixels whose target is ``ignore_index`` removed from both maps:
1-px boundary maps of the prediction mask (pred == k) and the ground-truth mask (target == k)
(DAVIS's seg2bmap: a pixel differs from its east, south or south-east neighbour; the image border
is not a boundary); precision = fraction of predicted boundary pixels within distance r of a
ground-truth boundary pixel (inside the GT boundary dilated by the disk x^2 + y^2 <= r^2), recall
the other way round, F = 2PR / (P + R) (0 when P + R = 0). Conventions of DAVIS for empty
boundaries: both empty gives P = R = F = 1; no predicted boundary but some GT boundary gives
P = 1, R = 0, F = 0; no GT boundary but some predicted boundary gives P = 0, R = 1, F = 0.

Thresholds follow DAVIS: t >= 1 is a radius in pixels, 0 <= t < 1 a fraction of the image
diagonal, r = ceil(t * sqrt(H^2 + W^2)). (The Gated-SCNN release passes fractions: on 1024x2048
Cityscapes images its list gives other radii than the paper's 3, 5, 9 and 12 px; give pixels to
get the paper's.)

Aggregation: per class, the mean of the per-image scores over all images, then the mean over
classes, as the Gated-SCNN release does. There an image where class k is absent from both maps
scores F = 1 for k, which inflates the means; so :meth:`BoundaryFScore.compute` reports beside it
the *strict* mean: per class, the mean over the images where the class is present (has pixels)
in the prediction or the ground truth; classes present in no image are NaN and left out of the
mean over classes.
"""

import math
from numbers import Integral, Real
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from .. import ops

_MAX_THRESHOLDS = 32  # kMaxRadii of the kernels


def boundary_radii(thresholds: Sequence[float], height: int, width: int) -> List[int]:
    """Pixel radii of the thresholds for an image of height x width, as DAVIS computes them:
    t itself for t >= 1, else ceil(t * sqrt(height^2 + width^2)).

    Examples:
        >>> from gscnn_ops.metrics import boundary_radii
        >>> boundary_radii([3, 5, 0.002], 1024, 2048)  # pixels, or fractions of the diagonal
        [3, 5, 5]
    """
    diagonal = math.sqrt(float(height * height + width * width))  # = numpy.linalg.norm((h, w))
    return [int(t) if t >= 1 else int(math.ceil(t * diagonal)) for t in thresholds]


def scores_from_counts(counts: Tensor) -> Dict[str, Tensor]:
    """Precision, recall and F from the counts of :func:`gscnn_ops.ops.boundary_fscore_counts`
    (..., 6) -> each (...), float64, with DAVIS's conventions for empty boundaries.

    Examples:
        >>> import torch
        >>> from gscnn_ops.metrics import scores_from_counts
        >>> counts = torch.tensor([[10, 8, 10, 9, 50, 52]])  # 8 of 10 and 9 of 10 matched
        >>> {k: round(float(v), 3) for k, v in scores_from_counts(counts).items()}
        {'precision': 0.8, 'recall': 0.9, 'f': 0.847}
    """
    c = counts.to(torch.float64)
    n_pred, m_pred, n_gt, m_gt = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    # No predicted boundary: P = 1 (nothing wrong was predicted); no GT boundary: R = 1. With the
    # matched counts 0 there, this gives all three DAVIS cases (1/1, 1/0, 0/1).
    precision = torch.where(n_pred > 0, m_pred / n_pred.clamp_min(1), torch.ones_like(n_pred))
    recall = torch.where(n_gt > 0, m_gt / n_gt.clamp_min(1), torch.ones_like(n_gt))
    total = precision + recall
    f = torch.where(
        total > 0, 2 * precision * recall / total.clamp_min(1e-300), torch.zeros_like(total)
    )
    return {"precision": precision, "recall": recall, "f": f}


def _check_thresholds(thresholds) -> Tuple[float, ...]:
    if isinstance(thresholds, (Real, Tensor)) and not isinstance(thresholds, bool):
        thresholds = [thresholds]
    out = []
    for t in thresholds:
        if isinstance(t, Tensor):
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, Real) or not math.isfinite(t):
            raise ValueError(f"BoundaryFScore: thresholds must be finite numbers, got {t!r}")
        if t < 0:
            raise ValueError(f"BoundaryFScore: thresholds must be non-negative, got {t!r}")
        if t >= 1 and t != int(t):
            raise ValueError(
                f"BoundaryFScore: a threshold >= 1 is a radius in pixels and must be a whole "
                f"number, got {t!r} (below 1 it is a fraction of the image diagonal)"
            )
        out.append(int(t) if t >= 1 else float(t))
    if not 1 <= len(out) <= _MAX_THRESHOLDS:
        raise ValueError(
            f"BoundaryFScore: between 1 and {_MAX_THRESHOLDS} thresholds are "
            f"supported, got {len(out)}"
        )
    return tuple(out)


class BoundaryFScore:
    """Accumulates the boundary F-score (DAVIS measure) of label maps over a data set.

    Args:
        num_classes: number of classes K; labels are 0 .. K-1.
        thresholds: boundary distance thresholds; t >= 1 in pixels, 0 <= t < 1 a fraction of the
            image diagonal (default: the paper's 3, 5, 9 and 12 px).
        ignore_index: target label of void pixels, removed from both maps (default 255). A pred
            pixel may also hold it, meaning "no class".

    ``update(pred, target)`` takes (N, H, W) or (H, W) integer label maps (uint8, int32, int64)
    on the CPU or a GPU (both on one device); images of different sizes may come in different
    calls. The fused kernel computes exact integer counts per (image, class, threshold), which
    are kept (on the device, 6 int64 per image, class and threshold), so :meth:`compute` is
    exact whatever the batching. ``reset()`` forgets them.

    :meth:`compute` returns a dict (float64 CPU tensors; T thresholds, K classes)::

        {
          "thresholds":     the thresholds, as given,
          "radii":          {(H, W): [pixel radius per threshold]} for the image sizes seen,
          "num_images":     number of images,
          # the release's convention: mean over all images per class, then over classes
          "per_class":      {"f": (T, K), "precision": (T, K), "recall": (T, K)},
          "mean_f":         (T,),  "mean_precision": (T,),  "mean_recall": (T,),
          # strict: per class, mean over the images where the class is present in pred or GT
          "strict": {
            "per_class":      {"f": (T, K), "precision": (T, K), "recall": (T, K)}
                              (NaN: never present),
            "mean_f":         (T,),  "mean_precision": (T,),  "mean_recall": (T,)
                              (over classes not NaN),
            "images_present": (K,) int64,
          },
        }

    :meth:`scores` gives the per-image values behind them.

    Examples:
        >>> import torch
        >>> from gscnn_ops import BoundaryFScore
        >>> metric = BoundaryFScore(num_classes=3, thresholds=[3, 5])
        >>> target = torch.randint(0, 3, (2, 32, 32))
        >>> metric.update(target, target)  # a perfect prediction
        >>> result = metric.compute()
        >>> result["mean_f"].tolist(), result["strict"]["mean_f"].tolist()
        ([1.0, 1.0], [1.0, 1.0])
    """

    def __init__(
        self, num_classes: int, thresholds: Sequence[float] = (3, 5, 9, 12), ignore_index: int = 255
    ):
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, Integral)
            or num_classes < 1
        ):
            raise ValueError(
                f"BoundaryFScore: num_classes must be a positive integer, got {num_classes!r}"
            )
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral):
            raise ValueError(
                f"BoundaryFScore: ignore_index must be an integer, got {ignore_index!r}"
            )
        self.num_classes = int(num_classes)
        self.thresholds = _check_thresholds(thresholds)
        self.ignore_index = int(ignore_index)
        self.reset()

    def reset(self) -> None:
        """Forgets every image seen so far."""
        self._counts: List[Tensor] = []
        self._radii: Dict[Tuple[int, int], List[int]] = {}

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds a batch: pred and target label maps, (N, H, W) or (H, W)."""
        if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
            raise TypeError(
                "BoundaryFScore.update: pred and target must be tensors, got "
                f"{type(pred).__name__} and {type(target).__name__}"
            )
        if pred.dim() == 2 and target.dim() == 2:
            pred, target = pred.unsqueeze(0), target.unsqueeze(0)
        if pred.dim() != 3:
            raise ValueError(
                "BoundaryFScore.update: pred must be an (N, H, W) or (H, W) label "
                f"map, got shape {tuple(pred.shape)}"
            )
        h, w = int(pred.shape[-2]), int(pred.shape[-1])
        radii = boundary_radii(self.thresholds, h, w)
        counts = ops.boundary_fscore_counts(
            pred, target, self.num_classes, radii, self.ignore_index
        )
        self._counts.append(counts)
        self._radii.setdefault((h, w), radii)

    @property
    def num_images(self) -> int:
        return sum(int(c.shape[0]) for c in self._counts)

    def counts(self) -> Tensor:
        """All counts so far, int64 (num_images, K, T, 6) on the CPU (see
        :func:`gscnn_ops.ops.boundary_fscore_counts` for the columns)."""
        if not self._counts:
            return torch.zeros(0, self.num_classes, len(self.thresholds), 6, dtype=torch.int64)
        counts = torch.cat([c.cpu() for c in self._counts])
        ops.check_errors()  # bad labels found on the GPU since the last update, now waited for
        return counts

    def scores(self) -> Dict[str, Tensor]:
        """Per-image scores: "precision", "recall", "f" float64 (num_images, K, T), and "present"
        bool (num_images, K): the class has pixels in the prediction or the ground truth."""
        counts = self.counts()
        out = scores_from_counts(counts)
        out["present"] = (counts[:, :, 0, 4] > 0) | (counts[:, :, 0, 5] > 0)
        return out

    def compute(self) -> dict:
        """The aggregated scores (see the class docstring)."""
        if self.num_images == 0:
            raise RuntimeError("BoundaryFScore.compute: no image was seen (call update first)")
        s = self.scores()
        present = s["present"].to(torch.float64)[:, :, None]  # (I, K, 1)
        n_present = present.sum(0)  # (K, 1)
        per_class, strict_per_class = {}, {}
        for name in ("f", "precision", "recall"):
            v = s[name]  # (I, K, T)
            per_class[name] = v.mean(0).T.contiguous()  # (T, K)
            strict = (v * present).sum(0) / n_present  # NaN where never present
            strict_per_class[name] = strict.T.contiguous()
        result = {
            "thresholds": list(self.thresholds),
            "radii": dict(self._radii),
            "num_images": self.num_images,
            "per_class": per_class,
            "strict": {
                "per_class": strict_per_class,
                "images_present": n_present[:, 0].to(torch.int64),
            },
        }
        for name in ("f", "precision", "recall"):
            result[f"mean_{name}"] = per_class[name].mean(1)
            result["strict"][f"mean_{name}"] = strict_per_class[name].nanmean(1)
        return result
