"""Pure-PyTorch references of the fused ops, written literally from the paper's equations.

They are what the fused kernels are tested against (and what ``fused=False`` runs in the model).
Nothing here is optimised: clarity first.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def gated_conv2d(
    s: Tensor,
    r: Tensor,
    gate_weight: Tensor,
    gate_bias: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """GCL, paper eq. (1)-(2):

    alpha_t = sigma(C_1x1(s_t || r_t))                          (1)
    s_hat_t = ((s_t ⊙ alpha_t) + s_t)^T w_t                     (2)

    Examples:
        >>> import torch
        >>> from gscnn_ops import reference
        >>> s, r = torch.randn(1, 4, 3, 3), torch.randn(1, 1, 3, 3)
        >>> out, alpha = reference.gated_conv2d(s, r, torch.zeros(1, 5, 1, 1), torch.zeros(1),
        ...                                     torch.eye(4).view(4, 4, 1, 1))
        >>> torch.allclose(out, 1.5 * s)  # alpha = sigmoid(0) = 0.5, identity weight
        True
    """
    alpha = torch.sigmoid(F.conv2d(torch.cat([s, r], dim=1), gate_weight, gate_bias))
    out = F.conv2d(s * alpha + s, weight, bias)
    return out, alpha


def gated_conv2d_mlp(
    s: Tensor,
    r: Tensor,
    hidden_weight: Tensor,
    hidden_bias: Tensor,
    gate_weight: Tensor,
    gate_bias: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """GCL whose 1x1 gate is a two-layer MLP (the authors' gate with its BatchNorms folded).

    Examples:
        >>> import torch
        >>> from gscnn_ops import reference
        >>> s, r = torch.randn(1, 4, 3, 3), torch.randn(1, 1, 3, 3)
        >>> out, alpha = reference.gated_conv2d_mlp(s, r, torch.randn(5, 5, 1, 1), torch.zeros(5),
        ...                                         torch.zeros(1, 5, 1, 1), torch.zeros(1),
        ...                                         torch.eye(4).view(4, 4, 1, 1))
        >>> torch.allclose(alpha, torch.full_like(alpha, 0.5))
        True
    """
    hidden = F.relu(F.conv2d(torch.cat([s, r], dim=1), hidden_weight, hidden_bias))
    alpha = torch.sigmoid(F.conv2d(hidden, gate_weight, gate_bias))
    out = F.conv2d(s * alpha + s, weight, bias)
    return out, alpha


def gated_conv2d_authors(
    s: Tensor, r: Tensor, gate_net: torch.nn.Module, weight: Tensor, bias: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """The authors' GCL as their release computes it, given its gate network
    (BatchNorm2d(C+Cr), Conv2d(C+Cr, C+Cr, 1), ReLU, Conv2d(C+Cr, 1, 1), BatchNorm2d(1)).

    Examples:
        >>> import torch
        >>> from gscnn_ops import reference
        >>> from gscnn_ops.nn import GatedConv2d
        >>> layer = GatedConv2d(4, 4, gate="mlp").eval()
        >>> s, r = torch.randn(1, 4, 3, 3), torch.randn(1, 1, 3, 3)
        >>> out, alpha = reference.gated_conv2d_authors(s, r, layer.gate_net, layer.weight)
        >>> torch.allclose(out, layer(s, r), atol=1e-5)
        True
    """
    alpha = torch.sigmoid(gate_net(torch.cat([s, r], dim=1)))
    out = F.conv2d(s * (alpha + 1), weight, bias)
    return out, alpha


# --- dual-task loss (paper eq. 4-5) -------------------------------------------------------------


def gaussian_taps(sigma: float, dtype=torch.float64, device=None) -> Tensor:
    """g(t) = exp(-t^2 / 2 sigma^2), t = -R..R, R = ceil(3 sigma), normalised to sum 1.

    Examples:
        >>> from gscnn_ops import reference
        >>> taps = reference.gaussian_taps(1.0)
        >>> len(taps), round(float(taps.sum()), 6)  # radius ceil(3 sigma) = 3, normalised
        (7, 1.0)
    """
    R = math.ceil(3 * sigma)
    t = torch.arange(-R, R + 1, dtype=torch.float64)
    g = torch.exp(-t * t / (2 * sigma * sigma))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with gradient 0 at 0 (instead of inf * 0 = nan)."""
    pos = x > 0
    return torch.where(
        pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x)
    )


def boundary_potential(prob: Tensor, sigma: float = 1.0) -> Tensor:
    """zeta = (1/sqrt 2) |grad(G * prob)| per class channel (paper eq. 4, with the softmax map in
    place of the argmax): G separable Gaussian (replicate borders), grad central differences
    (replicate borders).

    Examples:
        >>> import torch
        >>> from gscnn_ops import reference
        >>> prob = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
        >>> prob[..., 4:] = 1.0
        >>> zeta = reference.boundary_potential(prob)
        >>> [round(float(z), 3) for z in zeta[0, 0, 4, :4]]  # rises towards the boundary
        [0.002, 0.021, 0.105, 0.227]
    """
    N, K, H, W = prob.shape
    g = gaussian_taps(sigma, prob.dtype, prob.device)
    R = (g.numel() - 1) // 2
    x = prob.reshape(N * K, 1, H, W)
    x = F.conv2d(F.pad(x, (R, R, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))  # along x
    x = F.conv2d(F.pad(x, (0, 0, R, R), mode="replicate"), g.view(1, 1, -1, 1))  # along y
    b = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (b[:, :, 1:-1, 2:] - b[:, :, 1:-1, :-2]) / 2
    gy = (b[:, :, 2:, 1:-1] - b[:, :, :-2, 1:-1]) / 2
    zeta = _safe_sqrt(gx * gx + gy * gy) / math.sqrt(2)
    return zeta.reshape(N, K, H, W)


def dual_task_keep_mask(target: Tensor, sigma: float = 1.0, ignore_index: int = 255) -> Tensor:
    """(N, 1, H, W) bool: no ignore pixel within Chebyshev distance R + 1.

    Examples:
        >>> import torch
        >>> from gscnn_ops import reference
        >>> target = torch.zeros(1, 12, 12, dtype=torch.long)
        >>> target[:, 0, 0] = 255  # ignored: its neighbourhood (radius R + 1 = 4) is left out
        >>> keep = reference.dual_task_keep_mask(target)
        >>> keep.shape, bool(keep[0, 0, 4, 4]), bool(keep[0, 0, 5, 5])
        (torch.Size([1, 1, 12, 12]), False, True)
    """
    R = math.ceil(3 * sigma)
    ign = (target == ignore_index).to(torch.float32).unsqueeze(1)
    near = F.max_pool2d(ign, kernel_size=2 * R + 3, stride=1, padding=R + 1)
    return near == 0


def dual_task_loss(
    prob: Tensor,
    target: Tensor,
    sigma: float = 1.0,
    threshold: float = 1e-2,
    ignore_index: int = 255,
) -> Tensor:
    """sum_{P+} |zeta - zeta_hat| / max(|P+|, 1) (paper eq. 5). zeta_hat is the boundary
    potential of the one-hot labels (all channels 0 at ignore pixels); P+ = kept (n, k, pixel)
    positions with zeta > threshold or zeta_hat > threshold.

    Examples:
        >>> import torch
        >>> from gscnn_ops import reference
        >>> target = torch.zeros(1, 16, 16, dtype=torch.long)
        >>> target[:, :, 8:] = 1
        >>> prob = torch.full((1, 2, 16, 16), 0.5, dtype=torch.float64)
        >>> loss = reference.dual_task_loss(prob, target)
        >>> import gscnn_ops
        >>> torch.allclose(loss, gscnn_ops.dual_task_loss(prob, target))
        True
    """
    K = prob.shape[1]
    valid = target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, 0), K).permute(0, 3, 1, 2).to(prob.dtype)
    onehot = onehot * valid.unsqueeze(1).to(prob.dtype)
    zeta = boundary_potential(prob, sigma)
    zeta_hat = boundary_potential(onehot, sigma)
    keep = dual_task_keep_mask(target, sigma, ignore_index)
    band = keep & ((zeta > threshold) | (zeta_hat > threshold))
    band = band.detach()
    diff = (zeta - zeta_hat).abs() * band
    return diff.sum() / band.sum().clamp_min(1)


def edge_targets(target: Tensor, radius: float = 2.0, ignore_index: int = 255) -> Tensor:
    """Edge ground truth, literally from its definition: pixel p is an edge when label[p] is valid
    (!= ignore_index) and some pixel q with |q - p|^2 = dy^2 + dx^2 <= radius^2 has a valid label
    different from label[p]. Pixels outside the image are padding with the ignore label, so they
    never count. One shifted comparison per offset of the disk; target (N, H, W) integer.

    Examples:
        >>> import torch
        >>> from gscnn_ops import reference
        >>> reference.edge_targets(torch.tensor([[[0, 0, 1, 1]]]), radius=1).int()
        tensor([[[0, 1, 1, 0]]], dtype=torch.int32)
    """
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
            neighbour = padded[:, R + dy : R + dy + H, R + dx : R + dx + W]
            edge |= (neighbour != ignore_index) & (neighbour != labels)
    return edge & (labels != ignore_index)


# --- Boundary F-score (the DAVIS measure) -------------------------------------------------------


def _seg2bmap(mask: Tensor) -> Tensor:
    """1-px boundary map of a batch of binary masks (N, H, W), as DAVIS's seg2bmap: a pixel is a
    boundary pixel when it differs from its east, south or south-east neighbour; neighbours
    outside the image are not compared (so the last row only looks east, the last column only
    south, and the bottom-right pixel never is a boundary: the image border is no boundary)."""
    b = torch.zeros_like(mask)
    b[:, :, :-1] |= mask[:, :, :-1] ^ mask[:, :, 1:]  # east
    b[:, :-1, :] |= mask[:, :-1, :] ^ mask[:, 1:, :]  # south
    b[:, :-1, :-1] |= mask[:, :-1, :-1] ^ mask[:, 1:, 1:]  # south-east
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


def boundary_fscore_counts(
    pred: Tensor, target: Tensor, num_classes: int, radii, ignore_index: int = 255
) -> Tensor:
    """Counts of the boundary F-score, literally from the DAVIS definition (one dilation per class
    and radius). pred, target: (N, H, W) integer label maps. Returns int64 (N, K, R, 6) with, per
    image, class k and radius r (pixels):

      [0] pred boundary pixels              [1] of which inside the target boundary dilated by r
      [2] target boundary pixels            [3] of which inside the pred boundary dilated by r
      [4] pixels of class k in pred         [5] pixels of class k in target

    where both masks exclude the pixels whose target is ignore_index.

    Examples:
        >>> import torch, gscnn_ops
        >>> from gscnn_ops import reference
        >>> target = torch.randint(0, 3, (2, 9, 11))
        >>> pred = torch.randint(0, 3, (2, 9, 11))
        >>> torch.equal(reference.boundary_fscore_counts(pred, target, 3, [1, 2]),
        ...             gscnn_ops.boundary_fscore_counts(pred, target, 3, [1, 2]))
        True
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
