"""mIoU as the release and the Cityscapes scripts compute it: one confusion matrix over the whole
set, IoU = TP / (TP + FP + FN) per class, mean over the classes that occur (TP + FP + FN > 0, i.e.
in the ground truth or the prediction), pixels labelled ``ignore_index`` left out."""

import math
from numbers import Integral
from typing import Optional

import torch
from torch import Tensor

from ..data.classes import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a (K, K) int64 confusion matrix: rows are the target class, columns the
    predicted class. Pixels whose target is ``ignore_index`` are left out; any other target or
    predicted value outside [0, K) is an error (it would silently land in another cell).

    The matrix lives on the device of the first :meth:`update` (a GPU evaluation never copies
    label maps to the host).

    Examples:
        >>> import torch
        >>> from gscnn_ops import ConfusionMatrix
        >>> cm = ConfusionMatrix(num_classes=2)
        >>> cm.update(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 255]]))
        >>> result = cm.compute()
        >>> result["miou"], result["per_class_iou"]
        (0.5, [0.5, 0.5])
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, Integral)
            or num_classes < 1
        ):
            raise ValueError(
                f"ConfusionMatrix: num_classes must be a positive integer, got {num_classes!r}"
            )
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.matrix: Optional[Tensor] = None

    def reset(self) -> None:
        self.matrix = None

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds label maps of any matching shape ((N, H, W), (H, W), ...), on any one device."""
        if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
            raise TypeError("ConfusionMatrix.update: pred and target must be tensors")
        if pred.shape != target.shape:
            raise ValueError(
                f"ConfusionMatrix.update: pred {tuple(pred.shape)} and target "
                f"{tuple(target.shape)} differ in shape"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                "ConfusionMatrix.update: pred and target must be integer label maps "
                f"(argmax the logits first), got {pred.dtype} and {target.dtype}"
            )
        k = self.num_classes
        valid = target != self.ignore_index
        p, t = pred[valid].long(), target[valid].long()
        for name, v in (("pred", p), ("target", t)):
            if v.numel() and (int(v.min()) < 0 or int(v.max()) >= k):
                bad = v[(v < 0) | (v >= k)][0].item()
                raise ValueError(
                    f"ConfusionMatrix.update: {name} holds the value {bad}, outside "
                    f"[0, {k}) (ignore_index is {self.ignore_index})"
                )
        counts = torch.bincount(t * k + p, minlength=k * k).view(k, k)
        if self.matrix is None:
            self.matrix = counts
        else:
            self.matrix += counts.to(self.matrix.device)

    def compute(self) -> dict:
        """``{"miou": float, "per_class_iou": [float or None] * K, "pixel_accuracy": float,
        "matrix": int64 (K, K) CPU tensor}``. A class that never occurs (no pixel of it in the
        target nor the prediction) has IoU None — undefined, not 0 — and is left out of the
        mean.
        With no valid pixel at all, miou and pixel_accuracy are NaN."""
        k = self.num_classes
        m = self.matrix.cpu() if self.matrix is not None else torch.zeros(k, k, dtype=torch.int64)
        mf = m.to(torch.float64)
        tp = mf.diagonal()
        union = mf.sum(0) + mf.sum(1) - tp
        iou = tp / union  # NaN where the class never occurs
        total = mf.sum()
        return {
            "miou": iou.nanmean().item(),
            "per_class_iou": [None if math.isnan(v) else v for v in iou.tolist()],
            "pixel_accuracy": (tp.sum() / total).item() if total > 0 else math.nan,
            "matrix": m,
        }
