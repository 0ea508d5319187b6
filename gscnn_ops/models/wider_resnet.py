"""WideResNet-38 ("A2"), the regular stream of the Gated-SCNN release, as its ``WiderResNetA2``
with ``dilation=True`` behaves (written from reading it; none of its code is used):

- ``mod1``: a 3x3 convolution, 3 -> 64 channels, full resolution;
- max pooling (3x3, stride 2, padding 1) before ``mod2`` and before ``mod3``;
- ``mod2`` .. ``mod7``: 3, 3, 6, 3, 1, 1 pre-activation residual blocks of widths (128, 128),
  (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096); the first block of
  ``mod4`` has stride 2 (output stride 8); ``mod5`` is dilated 2, ``mod6`` and ``mod7`` 4;
- channel dropout 0.3 in ``mod6`` and 0.5 in ``mod7`` (before the bottleneck's last 1x1);
- GSCNN uses ``mod7``'s output as it is: the classifier's final BN-ReLU (``bn_out``) is not part
  of the trunk (its keys in an ImageNet file are expected to be unused).

Module and parameter names are the release's (``mod2.block1.bn1.0.weight``,
``mod6.block1.convs.conv3.weight``, ...) so its ImageNet file ``wider_resnet38.pth.tar`` and the
trunk of its GSCNN checkpoints load by name. ``output_stride=16`` is our addition: ``mod5`` gets
stride 2 instead of dilation, ``mod6`` and ``mod7`` dilation 2.
"""

from collections import OrderedDict
from typing import Dict, Sequence

from torch import Tensor, nn


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block: ``bn1`` (BN-ReLU) of the input, then ``convs`` — two 3x3
    convolutions (two widths) or a 1x1, 3x3, 1x1 bottleneck (three widths), BN-ReLU between them,
    optional channel dropout before the last convolution — plus the input, or a 1x1 projection
    (``proj_conv``) of the activated input when the width or the stride changes."""

    def __init__(
        self,
        cin: int,
        widths: Sequence[int],
        stride: int = 1,
        dilation: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(widths) not in (2, 3):
            raise ValueError(
                f"IdentityResidualBlock: widths must have 2 or 3 entries, got {widths}"
            )
        self.bn1 = _bn_relu(cin)
        if len(widths) == 2:
            layers = [
                ("conv1", nn.Conv2d(cin, widths[0], 3, stride, dilation, dilation, bias=False)),
                ("bn2", _bn_relu(widths[0])),
                ("conv2", nn.Conv2d(widths[0], widths[1], 3, 1, dilation, dilation, bias=False)),
            ]
        else:
            layers = [
                ("conv1", nn.Conv2d(cin, widths[0], 1, stride, bias=False)),
                ("bn2", _bn_relu(widths[0])),
                ("conv2", nn.Conv2d(widths[0], widths[1], 3, 1, dilation, dilation, bias=False)),
                ("bn3", _bn_relu(widths[1])),
                ("conv3", nn.Conv2d(widths[1], widths[2], 1, bias=False)),
            ]
        if dropout:
            layers.insert(len(layers) - 1, ("dropout", nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        self.proj_conv = (
            nn.Conv2d(cin, widths[-1], 1, stride, bias=False)
            if cin != widths[-1] or stride != 1
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        a = self.bn1(x)
        shortcut = x if self.proj_conv is None else self.proj_conv(a)
        return self.convs(a) + shortcut


class WiderResNet38(nn.Module):
    """``forward(x)`` returns the feature dict of :class:`ResNet` plus ``stride2``: ``stem``
    (``mod1``, 64 ch, stride 1), ``stride2`` (``mod2``, 128 ch), ``layer1`` (``mod3``, 256 ch,
    stride 4), ``layer2`` (``mod4``, 512 ch, stride 8), ``layer3`` (``mod5``, 1024 ch) and
    ``layer4`` (``mod7``, 4096 ch, no final BN-ReLU), the last three at the output stride.

    Examples:
        >>> import torch
        >>> from gscnn_ops.models import WiderResNet38
        >>> with torch.device("meta"):  # shapes only: the trunk has 105 M parameters
        ...     trunk = WiderResNet38()
        ...     features = trunk(torch.empty(1, 3, 64, 64))
        >>> tuple(features["layer4"].shape), tuple(features["stride2"].shape)
        ((1, 4096, 8, 8), (1, 128, 32, 32))
    """

    WIDTHS = (
        (128, 128),
        (256, 256),
        (512, 512),
        (512, 1024),
        (512, 1024, 2048),
        (1024, 2048, 4096),
    )
    BLOCKS = (3, 3, 6, 3, 1, 1)
    DROPOUT = (0.0, 0.0, 0.0, 0.0, 0.3, 0.5)
    # Keys of the release's ImageNet file that GSCNN does not use: the classifier and its BN-ReLU.
    UNUSED_PRETRAINED = ("classifier.", "bn_out.")

    def __init__(self, output_stride: int = 8):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"WiderResNet38: output_stride must be 8 or 16, got {output_stride!r}")
        self.name, self.output_stride = "wrn38", output_stride
        # (stride of the first block, dilation) of mod2 .. mod7; mod2 and mod3 are preceded by
        # max pooling.
        plan = [(1, 1), (1, 1), (2, 1)] + (
            [(1, 2), (1, 4), (1, 4)] if output_stride == 8 else [(2, 1), (1, 2), (1, 2)]
        )
        self.mod1 = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, 64, 3, 1, 1, bias=False))]))
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (widths, blocks, dropout, (stride, dilation)) in enumerate(
            zip(self.WIDTHS, self.BLOCKS, self.DROPOUT, plan)
        ):
            layer = []
            for b in range(blocks):
                layer.append(
                    (
                        f"block{b + 1}",
                        IdentityResidualBlock(
                            cin, widths, stride if b == 0 else 1, dilation, dropout
                        ),
                    )
                )
                cin = widths[-1]
            self.add_module(f"mod{i + 2}", nn.Sequential(OrderedDict(layer)))
        self.channels = {
            "stem": 64,
            "stride2": 128,
            "layer1": 256,
            "layer2": 512,
            "layer3": 1024,
            "layer4": 4096,
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        m1 = self.mod1(x)
        m2 = self.mod2(self.pool2(m1))
        m3 = self.mod3(self.pool3(m2))
        m4 = self.mod4(m3)
        m5 = self.mod5(m4)
        m7 = self.mod7(self.mod6(m5))
        return {"stem": m1, "stride2": m2, "layer1": m3, "layer2": m4, "layer3": m5, "layer4": m7}
