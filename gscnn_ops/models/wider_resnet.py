"""WideResNet-38 ("A2"), the regular stream of the Gated-SCNN release, written from its
description: pre-activation residual blocks, a full-resolution 64-channel stem, stages of
128, 256, 512, 1024, (512, 1024, 2048) and (1024, 2048, 4096) channels with 3, 3, 6, 3, 1, 1
blocks, output stride 8 with stages 5-7 dilated 2, 4, 4 (or stride 16 with 1, 2, 2).
"""

from typing import Dict, Sequence

from torch import Tensor, nn


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU, then two 3x3 convolutions (two widths) or a 1x1,
    3x3, 1x1 bottleneck (three widths); a 1x1 projection of the activated input when the width or
    stride changes."""

    def __init__(self, cin: int, widths: Sequence[int], stride: int = 1, dilation: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.pre = _bn_relu(cin)
        if len(widths) == 2:
            layers = [nn.Conv2d(cin, widths[0], 3, stride, dilation, dilation, bias=False),
                      _bn_relu(widths[0]),
                      nn.Conv2d(widths[0], widths[1], 3, 1, dilation, dilation, bias=False)]
        else:
            layers = [nn.Conv2d(cin, widths[0], 1, stride, bias=False), _bn_relu(widths[0]),
                      nn.Conv2d(widths[0], widths[1], 3, 1, dilation, dilation, bias=False),
                      _bn_relu(widths[1])]
            if dropout:
                layers.append(nn.Dropout2d(dropout))
            layers.append(nn.Conv2d(widths[1], widths[2], 1, bias=False))
        self.body = nn.Sequential(*layers)
        self.proj = (nn.Conv2d(cin, widths[-1], 1, stride, bias=False)
                     if cin != widths[-1] or stride != 1 else None)

    def forward(self, x: Tensor) -> Tensor:
        a = self.pre(x)
        shortcut = x if self.proj is None else self.proj(a)
        return self.body(a) + shortcut


class WiderResNet38(nn.Module):
    """``forward(x)`` returns the same keys as :class:`ResNet`: ``stem`` (64 ch, stride 1),
    ``layer1`` (256 ch, stride 4), ``layer2`` (512 ch, stride 8), ``layer3`` (1024 ch) and
    ``layer4`` (4096 ch, after the final BN-ReLU), the last two at the output stride."""

    STAGES = ((3, (128, 128)), (3, (256, 256)), (6, (512, 512)), (3, (512, 1024)),
              (1, (512, 1024, 2048)), (1, (1024, 2048, 4096)))

    def __init__(self, output_stride: int = 8):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"WiderResNet38: output_stride must be 8 or 16, got {output_stride!r}")
        self.name, self.output_stride = "wrn38", output_stride
        # (stride, dilation) of each stage's first block after the stem.
        plan = [(2, 1), (2, 1), (2, 1)] + ([(1, 2), (1, 4), (1, 4)] if output_stride == 8
                                            else [(2, 1), (1, 2), (1, 2)])
        self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        stages, cin = [], 64
        for i, ((blocks, widths), (stride, dilation)) in enumerate(zip(self.STAGES, plan)):
            dropout = {4: 0.1, 5: 0.3}.get(i, 0.0)
            layer = [PreActBlock(cin, widths, stride, dilation, dropout)]
            layer += [PreActBlock(widths[-1], widths, 1, dilation, dropout) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*layer))
            cin = widths[-1]
        self.stages = nn.ModuleList(stages)
        self.out = _bn_relu(cin)
        self.channels = {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 4096}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        stem = self.stem(x)
        feats, y = [], stem
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return {"stem": stem, "layer1": feats[1], "layer2": feats[2], "layer3": feats[3],
                "layer4": self.out(feats[5])}
