"""Dilated ResNets (DeepLabV3+ style) for the regular stream, with torchvision's parameter names.

The module and parameter names match ``torchvision.models.resnet*`` exactly (conv1, bn1,
layer1..layer4, downsample.0/1; no fc), so an ImageNet checkpoint a user already has loads with
``load_pretrained(model, path)``; nothing is downloaded. Output stride 8 replaces the strides of
layer3 and layer4 by dilations 2 and 4; output stride 16 only layer4's (dilation 2).
"""

from typing import Dict, List, Type, Union

from torch import Tensor, nn

from .tensor_file import load_tensor_file


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module = None,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(
            inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module = None,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 convolution (torchvision's "ResNet v1.5").
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_DEPTHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """A dilated ResNet trunk returning its intermediate features.

    ``forward(x)`` returns a dict: ``stem`` (64 ch, stride 2; also under ``stride2``), ``layer1``
    (stride 4), ``layer2`` (stride 8), ``layer3`` and ``layer4`` (stride 8 or 16, by
    ``output_stride``).

    Examples:
        >>> import torch
        >>> from gscnn_ops.models import ResNet
        >>> trunk = ResNet("resnet18", output_stride=8).eval()
        >>> with torch.no_grad():
        ...     features = trunk(torch.randn(1, 3, 64, 64))
        >>> [(k, tuple(v.shape[1:])) for k, v in features.items() if k in ("stem", "layer4")]
        [('stem', (64, 32, 32)), ('layer4', (512, 8, 8))]
    """

    UNUSED_PRETRAINED = ("fc.",)  # torchvision's classifier

    def __init__(self, name: str = "resnet101", output_stride: int = 8):
        super().__init__()
        if name not in _DEPTHS:
            raise ValueError(
                f"ResNet: unknown depth {name!r}; choose one of {sorted(_DEPTHS)} "
                f"(or 'wrn38' for GSCNN)"
            )
        if output_stride not in (8, 16):
            raise ValueError(f"ResNet: output_stride must be 8 or 16, got {output_stride!r}")
        block, layers = _DEPTHS[name]
        self.name, self.output_stride = name, output_stride
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 64
        dil3, dil4 = (2, 4) if output_stride == 8 else (1, 2)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(
            block, 256, layers[2], stride=1 if dil3 > 1 else 2, dilation=dil3
        )
        self.layer4 = self._make_layer(block, 512, layers[3], dilation=dil4)
        self.channels = {
            "stem": 64,
            "stride2": 64,
            "layer1": 64 * block.expansion,
            "layer2": 128 * block.expansion,
            "layer3": 256 * block.expansion,
            "layer4": 512 * block.expansion,
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilation: int = 1,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # As DeepLab: the first block of a dilated stage uses half the dilation (at least 1).
        layers: List[nn.Module] = [
            block(self.inplanes, planes, stride, max(1, dilation // 2), downsample)
        ]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        l1 = self.layer1(self.maxpool(stem))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return {
            "stem": stem,
            "stride2": stem,
            "layer1": l1,
            "layer2": l2,
            "layer3": l3,
            "layer4": l4,
        }


def load_pretrained(module: nn.Module, path: str, prefix: str = "") -> Dict[str, List[str]]:
    """Loads a checkpoint file (a state_dict, e.g. torchvision's ImageNet ResNet weights) into
    ``module``, safely (``weights_only=True``: no arbitrary unpickling).

    Keys under ``prefix`` in the file are matched to the module's keys (a ``module.`` prefix that
    every key has, as ``DataParallel`` saves them, is dropped first); the classifier (the module's
    ``UNUSED_PRETRAINED`` prefixes: ``fc.*`` for ResNets) is expected to be unused. Returns
    {"missing": [...], "unexpected": [...]} and raises
    ValueError naming the file when a tensor's shape does not fit or when nothing matched.

    Examples:
        >>> import os, tempfile, torch
        >>> from gscnn_ops.models import ResNet, load_pretrained
        >>> path = os.path.join(tempfile.mkdtemp(), "resnet18.pth")
        >>> state = {**ResNet("resnet18").state_dict(), "fc.weight": torch.zeros(1000, 512)}
        >>> torch.save(state, path)
        >>> load_pretrained(ResNet("resnet18"), path)  # the classifier is expected to be unused
        {'missing': [], 'unexpected': []}
    """
    state = load_tensor_file(path, ValueError, "load_pretrained: checkpoint")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"load_pretrained: {path!r} does not hold a state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"load_pretrained: {path!r}: {key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
    result = module.load_state_dict(state, strict=False)
    unused = getattr(module, "UNUSED_PRETRAINED", ())
    unexpected = [k for k in result.unexpected_keys if not k.startswith(unused)]
    if len(own) and len(result.missing_keys) == len(own):
        raise ValueError(
            f"load_pretrained: no key of {path!r} matches the model "
            f"(first keys in the file: {list(state)[:3]})"
        )
    return {"missing": list(result.missing_keys), "unexpected": unexpected}
