"""Pure-PyTorch references of the fused ops, written literally from the paper's equations.

They are what the fused kernels are tested against (and what ``fused=False`` runs in the model).
Nothing here is optimised: clarity first.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def gated_conv2d(s: Tensor, r: Tensor, gate_weight: Tensor, gate_bias: Tensor, weight: Tensor,
                 bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """GCL, paper eq. (1)-(2):

    alpha_t = sigma(C_1x1(s_t || r_t))                          (1)
    s_hat_t = ((s_t ⊙ alpha_t) + s_t)^T w_t                     (2)
    """
    alpha = torch.sigmoid(F.conv2d(torch.cat([s, r], dim=1), gate_weight, gate_bias))
    out = F.conv2d(s * alpha + s, weight, bias)
    return out, alpha


def gated_conv2d_mlp(s: Tensor, r: Tensor, hidden_weight: Tensor, hidden_bias: Tensor,
                     gate_weight: Tensor, gate_bias: Tensor, weight: Tensor,
                     bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """GCL whose 1x1 gate is a two-layer MLP (the authors' gate with its BatchNorms folded)."""
    hidden = F.relu(F.conv2d(torch.cat([s, r], dim=1), hidden_weight, hidden_bias))
    alpha = torch.sigmoid(F.conv2d(hidden, gate_weight, gate_bias))
    out = F.conv2d(s * alpha + s, weight, bias)
    return out, alpha


def gated_conv2d_authors(s: Tensor, r: Tensor, gate_net: torch.nn.Module, weight: Tensor,
                         bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The authors' GCL as their release computes it, given its gate network
    (BatchNorm2d(C+Cr), Conv2d(C+Cr, C+Cr, 1), ReLU, Conv2d(C+Cr, 1, 1), BatchNorm2d(1))."""
    alpha = torch.sigmoid(gate_net(torch.cat([s, r], dim=1)))
    out = F.conv2d(s * (alpha + 1), weight, bias)
    return out, alpha


# --- Boundary F-score (the DAVIS measure) -------------------------------------------------------

def _seg2bmap(mask: Tensor) -> Tensor:
    """1-px boundary map of a batch of binary masks (N, H, W), as DAVIS's seg2bmap: a pixel is a
    boundary pixel when it differs from its east, south or south-east neighbour; neighbours
    outside the image are not compared (so the last row only looks east, the last column only
    south, and the bottom-right pixel never is a boundary: the image border is no boundary)."""
    b = torch.zeros_like(mask)
    b[:, :, :-1] |= mask[:, :, :-1] ^ mask[:, :, 1:]        # east
    b[:, :-1, :] |= mask[:, :-1, :] ^ mask[:, 1:, :]        # south
    b[:, :-1, :-1] |= mask[:, :-1, :-1] ^ mask[:, 1:, 1:]   # south-east
    return b


def _dilate_disk(mask: Tensor, radius: int) -> Tensor:
    """Binary dilation of (N, H, W) masks by the disk x^2 + y^2 <= radius^2 (a convolution with
    the disk, exact in float32 for any disk that fits in memory)."""
    if radius == 0:
        return mask.clone()
    offsets = torch.arange(-radius, radius + 1, device=mask.device)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius).float()
    hits = F.conv2d(mask[:, None].float(), disk[None, None], padding=radius)
    return hits[:, 0] > 0.5


def boundary_fscore_counts(pred: Tensor, target: Tensor, num_classes: int, radii,
                           ignore_index: int = 255) -> Tensor:
    """Counts of the boundary F-score, literally from the DAVIS definition (one dilation per class
    and radius). pred, target: (N, H, W) integer label maps. Returns int64 (N, K, R, 6) with, per
    image, class k and radius r (pixels):

      [0] pred boundary pixels              [1] of which inside the target boundary dilated by r
      [2] target boundary pixels            [3] of which inside the pred boundary dilated by r
      [4] pixels of class k in pred         [5] pixels of class k in target

    where both masks exclude the pixels whose target is ignore_index.
    """
    n, h, w = pred.shape
    valid = target != ignore_index
    out = torch.zeros(n, num_classes, len(radii), 6, dtype=torch.int64, device=pred.device)
    for k in range(num_classes):
        pred_mask = (pred == k) & valid
        target_mask = (target == k) & valid
        pred_b, target_b = _seg2bmap(pred_mask), _seg2bmap(target_mask)
        for j, r in enumerate(radii):
            out[:, k, j, 0] = pred_b.sum((1, 2))
            out[:, k, j, 1] = (pred_b & _dilate_disk(target_b, r)).sum((1, 2))
            out[:, k, j, 2] = target_b.sum((1, 2))
            out[:, k, j, 3] = (target_b & _dilate_disk(pred_b, r)).sum((1, 2))
            out[:, k, j, 4] = pred_mask.sum((1, 2))
            out[:, k, j, 5] = target_mask.sum((1, 2))
    return out
