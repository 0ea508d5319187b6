"""Pure-PyTorch references of the fused ops, written literally from the paper's equations.

They are what the fused kernels are tested against (and what ``fused=False`` runs in the model).
Nothing here is optimised: clarity first.
"""

import math
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


def edge_targets(target: Tensor, radius: float = 2.0, ignore_index: int = 255) -> Tensor:
    """Edge ground truth, literally from its definition: pixel p is an edge when label[p] is valid
    (!= ignore_index) and some pixel q with |q - p|^2 = dy^2 + dx^2 <= radius^2 has a valid label
    different from label[p]. Pixels outside the image are padding with the ignore label, so they
    never count. One shifted comparison per offset of the disk; target (N, H, W) integer."""
    labels = target.long()
    N, H, W = labels.shape
    # Offsets beyond the image size only ever see padding: stop there (also for radius = inf).
    R = int(min(radius, max(H, W))) if radius >= 1 else 0  # int() floors radius >= 0
    padded = F.pad(labels, (R, R, R, R), value=ignore_index)
    edge = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for dy in range(-R, R + 1):
        for dx in range(-R, R + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            neighbour = padded[:, R + dy:R + dy + H, R + dx:R + dx + W]
            edge |= (neighbour != ignore_index) & (neighbour != labels)
    return edge & (labels != ignore_index)
