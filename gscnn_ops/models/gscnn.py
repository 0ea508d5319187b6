"""The Gated-SCNN network: regular stream, shape stream with gated convolutions, fusion (ASPP with
an edge branch) and a DeepLabV3+ decoder. ``shape_stream=False`` gives the DeepLabV3+ baseline of
the same trunk, for ablations.
"""

import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import GatedConv2d
from .resnet import BasicBlock, ResNet, load_pretrained
from .wider_resnet import WiderResNet38


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size, align_corners: bool = False) -> Tensor:
    return (
        x
        if tuple(x.shape[-2:]) == tuple(size)
        else F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    )


class ShapeStream(nn.Module):
    """Residual blocks interleaved with three gated convolutions (32, 16, 8 channels), each gated
    by a 1-channel projection of a regular-stream stage, ending in a 1-channel edge logit map.

    Runs at ``1 / stride`` of the input resolution (the release: full resolution, stride 1).
    Stride 2 costs about a quarter of the memory and time of the shape stream, at the price of
    coarser boundaries (the edge logits are upsampled to full resolution).

    ``gate`` is the GCL gate (:class:`~gscnn_ops.nn.GatedConv2d`: the paper's ``"linear"`` or the
    release's ``"mlp"``); ``reduce_bias`` gives the 1x1 width reductions a bias (the release);
    ``align_corners`` is the mode of the gate maps' bilinear upsampling.

    Examples:
        >>> import torch
        >>> from gscnn_ops.models import ShapeStream
        >>> stream = ShapeStream(stem_channels=64, gate_channels=[64, 128, 512])
        >>> stem = torch.randn(1, 64, 32, 32)
        >>> stages = [torch.randn(1, c, s, s) for c, s in ((64, 8), (128, 4), (512, 4))]
        >>> edge_logits, alphas = stream(stem, stages, (64, 64))
        >>> edge_logits.shape, [tuple(a.shape) for a in alphas]
        (torch.Size([1, 1, 64, 64]), [(1, 1, 64, 64), (1, 1, 64, 64), (1, 1, 64, 64)])
    """

    def __init__(
        self,
        stem_channels: int,
        gate_channels: List[int],
        stride: int = 1,
        fused: bool = True,
        gate: str = "linear",
        reduce_bias: bool = False,
        align_corners: bool = False,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShapeStream: stride must be 1 or 2, got {stride!r}")
        self.stride, self.align_corners = stride, align_corners
        self.gates = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in gate_channels)
        widths = [stem_channels, 32, 16, 8]
        self.blocks = nn.ModuleList(BasicBlock(w, w) for w in widths[:3])
        self.reduce = nn.ModuleList(
            nn.Conv2d(a, b, 1, bias=reduce_bias) for a, b in zip(widths, widths[1:])
        )
        self.gcls = nn.ModuleList(
            GatedConv2d(w, w, gate_channels=1, gate=gate, fused=fused) for w in widths[1:]
        )
        self.head = nn.Conv2d(8, 1, 1, bias=False)

    def forward(self, stem: Tensor, stages: List[Tensor], size):
        h, w = size[0] // self.stride, size[1] // self.stride
        x = _resize(stem, (h, w), self.align_corners)
        alphas = []
        for block, reduce, gcl, gate, stage in zip(
            self.blocks, self.reduce, self.gcls, self.gates, stages
        ):
            x = reduce(block(x))
            x, alpha = gcl(x, _resize(gate(stage), (h, w), self.align_corners), return_alpha=True)
            alphas.append(alpha)
        return _resize(self.head(x), size, self.align_corners), alphas


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, three atrous 3x3 branches, image pooling and,
    for GSCNN, an edge branch (the fused edge map resized to the feature size, 1x1 to 256), all
    concatenated in that order and projected to ``cout`` channels.

    ``release=True`` is the release's variant: BatchNorm on the image-pooling branch (so it needs
    more than one image per batch in training), the edge map resized with ``align_corners=True``,
    and a plain 1x1 projection (no BatchNorm, no ReLU).

    Examples:
        >>> import torch
        >>> from gscnn_ops.models import ASPP
        >>> aspp = ASPP(512, rates=(12, 24, 36)).eval()
        >>> aspp(torch.randn(1, 512, 8, 8), edge=torch.rand(1, 1, 64, 64)).shape
        torch.Size([1, 256, 8, 8])
    """

    def __init__(
        self, cin: int, rates, cout: int = 256, edge_branch: bool = True, release: bool = False
    ):
        super().__init__()
        self.release = release
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, cout, 1)] + [_conv_bn_relu(cin, cout, 3, r) for r in rates]
        )
        # Ours has no BatchNorm on the pooled branch: with one image per device (the release
        # trains with batch 1 per GPU) it would normalise a single value per channel, and fails
        # in training.
        self.pool = (
            _conv_bn_relu(cin, cout, 1)
            if release
            else nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        )
        self.edge = _conv_bn_relu(1, cout, 1) if edge_branch else None
        n = len(self.branches) + 1 + (1 if edge_branch else 0)
        self.project = (
            nn.Sequential(nn.Conv2d(n * cout, cout, 1, bias=False))
            if release
            else _conv_bn_relu(n * cout, cout, 1)
        )

    def forward(self, x: Tensor, edge: Optional[Tensor] = None) -> Tensor:
        size = x.shape[-2:]
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x.mean((2, 3), keepdim=True)).expand(-1, -1, *size))
        if self.edge is not None:
            feats.append(self.edge(_resize(edge, size, self.release)))
        return self.project(torch.cat(feats, dim=1))


@dataclass
class GSCNNOutput:
    """What :class:`GSCNN` returns: segmentation logits, edge logits and, on request, the gate maps.

    Examples:
        >>> import torch
        >>> from gscnn_ops.models import GSCNNOutput
        >>> out = GSCNNOutput(seg=torch.zeros(1, 19, 8, 8))
        >>> out.edge is None, out.alphas
        (True, [])
    """

    seg: Tensor  # (N, K, H, W) segmentation logits
    edge: Optional[Tensor] = None  # (N, 1, H, W) edge logits (None for the baseline)
    alphas: List[Tensor] = field(default_factory=list)  # the three GCL gate maps, on request


HEADS = ("gscnn_ops", "release")


class GSCNN(nn.Module):
    """Gated-SCNN (Takikawa et al., ICCV 2019).

    Args:
        num_classes: K.
        backbone: "resnet18", "resnet34", "resnet50", "resnet101" or "wrn38" (WideResNet-38, the
            release's trunk).
        output_stride: 8 (ASPP rates 12/24/36) or 16 (6/12/18).
        shape_stream: False gives the DeepLabV3+ baseline of the same trunk.
        fused: run gscnn_ops' fused kernels (True) or their pure-PyTorch references.
        shape_stride: resolution of the shape stream, 1 (full, as the release) or 2.
        pretrained: path of an ImageNet checkpoint for the trunk (torchvision's format for the
            ResNets, the release's ``wider_resnet38.pth.tar`` for wrn38; nothing is downloaded),
            or None.
        head: ``"gscnn_ops"`` (default) or ``"release"``, the head of the authors' release, so
            that its checkpoints run unchanged (:func:`~gscnn_ops.models.load_release`) and can
            be fine-tuned. The release's head differs from ours in: the decoder's skip comes from
            the trunk's stride-2 feature through a plain 1x1 convolution (ours: stride 4, with
            BN-ReLU); the ASPP's image pooling has a BatchNorm and its projection is a plain 1x1
            convolution; the last convolution and the edge fusion have no bias; the shape stream's
            width reductions have one; every GCL uses the BN-MLP gate; every bilinear resize but
            the last uses ``align_corners=True``. Its Canny input is
            :func:`~gscnn_ops.models.release_canny` of the normalised image, not ``canny`` of the
            real one.

    ``forward(image, canny=None, return_alphas=False)``: ``image`` (N, 3, H, W) normalised;
    ``canny`` (N, 1, H, W) in [0, 1], the Canny edges of the *un-normalised* image, computed off
    the hot path (data loader or a helper); None means no image-gradient input (zeros).

    Examples:
        >>> import torch
        >>> from gscnn_ops import GSCNN
        >>> from gscnn_ops.data import normalize, render_scene
        >>> from gscnn_ops.filters import canny
        >>> model = GSCNN(num_classes=19, backbone="resnet18").eval()
        >>> image, _ = render_scene(0, 64, 96)
        >>> with torch.no_grad():
        ...     out = model(normalize(image)[None], canny(image)[None], return_alphas=True)
        >>> out.seg.shape, out.edge.shape, len(out.alphas)
        (torch.Size([1, 19, 64, 96]), torch.Size([1, 1, 64, 96]), 3)
    """

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "resnet101",
        output_stride: int = 8,
        shape_stream: bool = True,
        fused: bool = True,
        shape_stride: int = 1,
        pretrained: Optional[str] = None,
        head: str = "gscnn_ops",
    ):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"GSCNN: num_classes must be a positive int, got {num_classes!r}")
        if head not in HEADS:
            raise ValueError(f"GSCNN: head must be one of {HEADS}, got {head!r}")
        self.num_classes, self.fused, self.head = num_classes, fused, head
        release = head == "release"
        self.trunk = (
            WiderResNet38(output_stride) if backbone == "wrn38" else ResNet(backbone, output_stride)
        )
        self.load_report = None
        if pretrained is not None:
            self.load_report = load_pretrained(self.trunk, pretrained)
            if self.load_report["missing"] or self.load_report["unexpected"]:
                warnings.warn(
                    f"GSCNN: {pretrained!r} left {len(self.load_report['missing'])} "
                    f"trunk parameters unset ({self.load_report['missing'][:5]}...) and "
                    f"had {len(self.load_report['unexpected'])} unused keys "
                    f"({self.load_report['unexpected'][:5]}...)",
                    stacklevel=2,
                )
        ch = self.trunk.channels
        rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        self.align_corners = release  # of every bilinear resize but the last
        self.shape = (
            ShapeStream(
                ch["stem"],
                [ch["layer1"], ch["layer2"], ch["layer4"]],
                shape_stride,
                fused,
                gate="mlp" if release else "linear",
                reduce_bias=release,
                align_corners=release,
            )
            if shape_stream
            else None
        )
        if shape_stream:
            # [sigmoid(edge logits) || canny] -> 1 map
            self.edge_fuse = nn.Conv2d(2, 1, 1, bias=not release)
        self.aspp = ASPP(ch["layer4"], rates, edge_branch=shape_stream, release=release)
        self.low_level_key = "stride2" if release else "layer1"
        self.low_level = (
            nn.Sequential(nn.Conv2d(ch["stride2"], 48, 1, bias=False))
            if release
            else _conv_bn_relu(ch["layer1"], 48, 1)
        )
        self.decoder = nn.Sequential(
            _conv_bn_relu(256 + 48, 256, 3),
            _conv_bn_relu(256, 256, 3),
            nn.Conv2d(256, num_classes, 1, bias=not release),
        )

    def forward(
        self, image: Tensor, canny: Optional[Tensor] = None, return_alphas: bool = False
    ) -> GSCNNOutput:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"GSCNN: image must be (N, 3, H, W), got {tuple(image.shape)}")
        size = image.shape[-2:]
        f = self.trunk(image)
        edge_logits, alphas, edge_feat = None, [], None
        if self.shape is not None:
            edge_logits, alphas = self.shape(
                f["stem"], [f["layer1"], f["layer2"], f["layer4"]], size
            )
            if canny is None:
                canny = torch.zeros_like(edge_logits)
            elif canny.shape != edge_logits.shape:
                raise ValueError(
                    f"GSCNN: canny must be (N, 1, H, W) = {tuple(edge_logits.shape)}, "
                    f"got {tuple(canny.shape)}"
                )
            edge_feat = torch.sigmoid(
                self.edge_fuse(
                    torch.cat([torch.sigmoid(edge_logits), canny.to(edge_logits.dtype)], dim=1)
                )
            )
        x = self.aspp(f["layer4"], edge_feat)
        low = self.low_level(f[self.low_level_key])
        x = self.decoder(torch.cat([_resize(x, low.shape[-2:], self.align_corners), low], dim=1))
        return GSCNNOutput(
            seg=_resize(x, size), edge=edge_logits, alphas=alphas if return_alphas else []
        )
