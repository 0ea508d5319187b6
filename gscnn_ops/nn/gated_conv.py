"""GatedConv2d: the Gated Convolutional Layer (GCL) of Gated-SCNN as an nn.Module."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops, reference


class GatedConv2d(nn.Module):
    """Gated Convolutional Layer (Takikawa et al., ICCV 2019, eq. 1-2).

    Gates shape-stream features ``s`` (N, in_channels, H, W) with a map alpha computed from
    ``[s || r]``, where ``r`` (N, gate_channels, H, W) comes from the regular stream, then applies
    a 1x1 convolution with a residual: ``out = conv1x1(s * (1 + alpha))``.

    Args:
        in_channels: C, channels of ``s``.
        out_channels: C_out.
        gate_channels: Cr, channels of ``r`` (1 in Gated-SCNN, whose gates are 1-channel maps).
        gate: ``"linear"`` — the paper's alpha = sigmoid(w_g . [s || r] + b_g), parameters
            ``gate_weight`` (1, C+Cr, 1, 1) and ``gate_bias`` (1,); or ``"mlp"`` — the authors'
            gate ``gate_net`` = BatchNorm2d(C+Cr), Conv2d(C+Cr, C+Cr, 1), ReLU, Conv2d(C+Cr, 1, 1),
            BatchNorm2d(1). In training mode the gate MLP runs as standard layers and hands its
            logits to the fused op; in eval mode the whole layer runs as one fused op with the
            BatchNorms folded into the 1x1 convolutions.
        bias: whether the output 1x1 convolution has a bias (the authors use none).
        fused: run the fused kernels (default) or the pure-PyTorch reference of the same math.

    ``forward(s, r, return_alpha=False)`` returns ``out`` (N, out_channels, H, W), or
    ``(out, alpha)`` with alpha of shape (N, 1, H, W).

    Examples:
        >>> import torch
        >>> from gscnn_ops import GatedConv2d
        >>> layer = GatedConv2d(32, 32, gate_channels=1)
        >>> s, r = torch.randn(2, 32, 20, 24), torch.randn(2, 1, 20, 24)
        >>> out, alpha = layer(s, r, return_alpha=True)
        >>> out.shape, alpha.shape
        (torch.Size([2, 32, 20, 24]), torch.Size([2, 1, 20, 24]))
        >>> out.sum().backward()  # fused backward kernel
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        gate_channels: int = 1,
        gate: str = "linear",
        bias: bool = False,
        fused: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("gate_channels", gate_channels),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GatedConv2d: {name} must be a positive int, got {value!r}")
        if gate not in ("linear", "mlp"):
            raise ValueError(f"GatedConv2d: gate must be 'linear' or 'mlp', got {gate!r}")
        self.in_channels, self.out_channels, self.gate_channels = (
            in_channels,
            out_channels,
            gate_channels,
        )
        self.gate, self.fused = gate, fused
        d = in_channels + gate_channels
        if gate == "linear":
            self.gate_weight = nn.Parameter(torch.empty(1, d, 1, 1))
            self.gate_bias = nn.Parameter(torch.empty(1))
        else:
            self.gate_net = nn.Sequential(
                nn.BatchNorm2d(d),
                nn.Conv2d(d, d, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(d, 1, 1),
                nn.BatchNorm2d(1),
            )
            # alpha = sigmoid(logits) through the linear fused op: gate weight picks the logit
            # channel, zero bias. Not saved in state_dict.
            logit_gate = torch.zeros(1, in_channels + 1, 1, 1)
            logit_gate[0, in_channels] = 1.0
            self.register_buffer("_logit_gate_weight", logit_gate, persistent=False)
            self.register_buffer("_logit_gate_bias", torch.zeros(1), persistent=False)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-normal for the output 1x1 convolution, as the authors do; the gate as nn.Conv2d.
        nn.init.xavier_normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.gate == "linear":
            nn.init.kaiming_uniform_(self.gate_weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(self.gate_weight.shape[1])
            nn.init.uniform_(self.gate_bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, gate_channels={self.gate_channels}, "
            f"gate={self.gate!r}, bias={self.bias is not None}, fused={self.fused}"
        )

    def _check_inputs(self, s: Tensor, r: Tensor) -> None:
        if s.dim() != 4 or s.shape[1] != self.in_channels:
            raise ValueError(
                f"GatedConv2d: s must be (N, {self.in_channels}, H, W), got {tuple(s.shape)}"
            )
        if r.dim() != 4 or r.shape[1] != self.gate_channels:
            raise ValueError(
                f"GatedConv2d: r must be (N, {self.gate_channels}, H, W), got {tuple(r.shape)}"
            )

    def forward(self, s: Tensor, r: Tensor, return_alpha: bool = False):
        self._check_inputs(s, r)
        if self.gate == "linear":
            fn = ops.gated_conv2d if self.fused else reference.gated_conv2d
            out, alpha = fn(s, r, self.gate_weight, self.gate_bias, self.weight, self.bias)
        elif self.training or not _foldable(self.gate_net):
            logits = self.gate_net(torch.cat([s, r], dim=1))
            if self.fused:
                out, alpha = ops.gated_conv2d(
                    s,
                    logits,
                    self._logit_gate_weight,
                    self._logit_gate_bias,
                    self.weight,
                    self.bias,
                )
            else:
                alpha = torch.sigmoid(logits)
                out = F.conv2d(s * alpha + s, self.weight, self.bias)
        else:
            folded = fold_gate_net(self.gate_net)
            fn = ops.gated_conv2d_mlp if self.fused else reference.gated_conv2d_mlp
            out, alpha = fn(s, r, *folded, self.weight, self.bias)
        return (out, alpha) if return_alpha else out


def _foldable(gate_net: nn.Sequential) -> bool:
    """BatchNorm can be folded only when it uses running statistics."""
    return all(bn.running_mean is not None for bn in (gate_net[0], gate_net[4]))


def _bn_scale_shift(bn: nn.BatchNorm2d):
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fold_gate_net(gate_net: nn.Sequential):
    """Folds the eval-mode BatchNorms of the authors' gate into its two 1x1 convolutions.

    Returns (hidden_weight (M, D, 1, 1), hidden_bias (M,), gate_weight (1, M, 1, 1),
    gate_bias (1,)) with sigmoid(gate_weight . relu(hidden_weight . x + hidden_bias) + gate_bias)
    equal to sigmoid(gate_net(x)) in eval mode. Differentiable in the module's parameters.

    Examples:
        >>> import torch
        >>> from gscnn_ops import GatedConv2d, fold_gate_net
        >>> layer = GatedConv2d(8, 8, gate="mlp").eval()
        >>> hidden_weight, hidden_bias, gate_weight, gate_bias = fold_gate_net(layer.gate_net)
        >>> x = torch.randn(1, 9, 4, 4)
        >>> h = torch.relu(torch.nn.functional.conv2d(x, hidden_weight, hidden_bias))
        >>> folded = torch.nn.functional.conv2d(h, gate_weight, gate_bias)
        >>> torch.allclose(folded, layer.gate_net(x), atol=1e-5)
        True
    """
    bn_in, conv1, _, conv2, bn_out = gate_net
    sc1, sh1 = _bn_scale_shift(bn_in)
    w1 = conv1.weight.flatten(1)
    b1 = conv1.bias if conv1.bias is not None else w1.new_zeros(w1.shape[0])
    hidden_weight = (w1 * sc1[None, :]).reshape(conv1.weight.shape)
    hidden_bias = b1 + w1 @ sh1
    sc2, sh2 = _bn_scale_shift(bn_out)
    b2 = conv2.bias if conv2.bias is not None else conv2.weight.new_zeros(1)
    gate_weight = conv2.weight * sc2.reshape(1, 1, 1, 1)
    gate_bias = b2 * sc2 + sh2
    return hidden_weight, hidden_bias, gate_weight, gate_bias
