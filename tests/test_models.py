"""The GSCNN model layer: trunks, shape stream, fusion, fused vs reference mode, checkpoints."""

import copy

import pytest
import torch

from gscnn_ops.models import GSCNN, ResNet, WiderResNet38, load_pretrained

from conftest import oracle

BACKBONES = ["resnet18", "resnet34", "resnet50", "resnet101"]


@pytest.mark.parametrize("backbone", BACKBONES + ["wrn38"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_trunk_strides_and_channels(backbone, output_stride):
    trunk = (
        WiderResNet38(output_stride) if backbone == "wrn38" else ResNet(backbone, output_stride)
    ).eval()
    with torch.no_grad():
        f = trunk(torch.randn(1, 3, 64, 96))
    deep = 64 // output_stride
    stem = 64 if backbone == "wrn38" else 32  # WideResNet-38's stem is at full resolution
    expect = {"stem": stem, "layer1": 16, "layer2": 8, "layer3": deep, "layer4": deep}
    for name, side in expect.items():
        assert f[name].shape[1] == trunk.channels[name], name
        assert f[name].shape[-2:] == (side, side * 3 // 2), name


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "wrn38"])
@pytest.mark.parametrize("shape_stream", [True, False])
def test_output_shapes_at_odd_sizes(backbone, shape_stream):
    torch.manual_seed(0)
    model = GSCNN(num_classes=7, backbone=backbone, shape_stream=shape_stream).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 45, 71), torch.rand(2, 1, 45, 71).round(), return_alphas=True)
    assert out.seg.shape == (2, 7, 45, 71)
    if shape_stream:
        assert out.edge.shape == (2, 1, 45, 71)
        assert [tuple(a.shape) for a in out.alphas] == [(2, 1, 45, 71)] * 3
        assert all(((a >= 0) & (a <= 1)).all() for a in out.alphas)
    else:
        assert out.edge is None and out.alphas == []
    assert torch.isfinite(out.seg).all()


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _shape_stream_parameters(ch):
    """The parameters the shape stream adds, from its definition (written out here, not read
    from the modules): gates (1x1 to 1 channel, with bias) from layer1, layer2, layer4; residual
    blocks at widths stem, 32, 16 (two 3x3 convolutions and two BatchNorms each); 1x1 reductions
    stem->32->16->8; three linear-gate GCLs (gate weight w + 1, gate bias, w x w weight); the
    1x1 head; the 1x1 fusion of edge and Canny (with bias); ASPP's edge branch (1x1 to 256 and
    its BatchNorm) and the 256 more input channels of ASPP's projection."""
    widths = [ch["stem"], 32, 16, 8]
    gates = sum(ch[k] + 1 for k in ("layer1", "layer2", "layer4"))
    blocks = sum(18 * w * w + 4 * w for w in widths[:3])
    reduce = sum(a * b for a, b in zip(widths, widths[1:]))
    gcls = sum(w * w + w + 2 for w in widths[1:])
    return gates + blocks + reduce + gcls + 8 + 3 + (256 + 512) + 256 * 256


def test_parameter_counts():
    # Built on the meta device: shapes only, no memory, no initialisation (fast).
    torchvision = oracle("torchvision")
    for backbone in BACKBONES + ["wrn38"]:
        with torch.device("meta"):
            base = GSCNN(19, backbone, shape_stream=False)
            full = GSCNN(19, backbone, shape_stream=True)
        assert _count(full) - _count(base) == _shape_stream_parameters(base.trunk.channels), (
            backbone
        )
        if backbone == "wrn38":  # the release's WiderResNetA2 (its parameter list, read off it)
            assert _count(base.trunk) == 105_062_720
            continue
        with torch.device("meta"):
            tv = getattr(torchvision.models, backbone)()
        # the trunk is torchvision's ResNet without its classifier, parameter for parameter
        assert _count(base.trunk) == _count(tv) - _count(tv.fc), backbone


@pytest.mark.parametrize("shape_stride", [1, 2])
def test_fused_and_reference_modes_agree(shape_stride):
    torch.manual_seed(0)
    fused = GSCNN(5, "resnet18", fused=True, shape_stride=shape_stride).double().train()
    ref = copy.deepcopy(fused)
    for m in ref.modules():
        if hasattr(m, "fused"):
            m.fused = False
    image = torch.randn(2, 3, 33, 47, dtype=torch.float64)
    canny = torch.rand(2, 1, 33, 47, dtype=torch.float64).round()
    outs = []
    for model in (fused, ref):
        out = model(image, canny, return_alphas=True)
        loss = out.seg.square().mean() + out.edge.sigmoid().mean()
        loss.backward()
        outs.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(a.seg, b.seg, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(a.edge, b.edge, rtol=1e-9, atol=1e-10)
    for name in ga:
        torch.testing.assert_close(
            ga[name], gb[name], rtol=1e-8, atol=1e-10, msg=lambda m: f"{name}: {m}"
        )


def _torchvision_style_state(trunk):
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, trunk.channels["layer4"])
    state["fc.bias"] = torch.randn(1000)
    return state


def test_torchvision_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    source = ResNet("resnet18")
    for p in source.parameters():
        p.data.normal_()
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(_torchvision_style_state(source), path)
    model = GSCNN(3, "resnet18", pretrained=str(path))
    assert model.load_report == {"missing": [], "unexpected": []}
    for k, v in source.state_dict().items():
        assert torch.equal(model.trunk.state_dict()[k], v), k


class Evil:
    """An arbitrary object in a checkpoint: weights_only loading must refuse to build it."""


def test_checkpoint_problems_are_reported(tmp_path):
    trunk = ResNet("resnet18")
    state = _torchvision_style_state(trunk)
    del state["layer4.1.bn2.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    report = load_pretrained(ResNet("resnet18"), str(path))
    assert report["missing"] == ["layer4.1.bn2.weight"] and report["unexpected"] == ["extra.weight"]
    with pytest.warns(UserWarning, match="left 1 trunk parameters unset"):
        GSCNN(3, "resnet18", pretrained=str(path))

    wrong = tmp_path / "resnet50.pth"
    torch.save(_torchvision_style_state(ResNet("resnet50")), wrong)
    with pytest.raises(ValueError, match="resnet50.pth.*has shape"):
        load_pretrained(ResNet("resnet18"), str(wrong))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_pretrained(ResNet("resnet18"), str(garbage))

    pickled = tmp_path / "object.pth"
    torch.save({"conv1.weight": Evil()}, pickled)
    with pytest.raises(ValueError, match="object.pth"):  # weights_only refuses arbitrary objects
        load_pretrained(ResNet("resnet18"), str(pickled))

    not_tensors = tmp_path / "lists.pth"
    torch.save({"conv1.weight": [1, 2, 3]}, not_tensors)
    with pytest.raises(ValueError, match="lists.pth.*state_dict of tensors"):
        load_pretrained(ResNet("resnet18"), str(not_tensors))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown depth"):
        GSCNN(19, "resnet7")
    with pytest.raises(ValueError, match="output_stride"):
        GSCNN(19, "resnet18", output_stride=4)
    with pytest.raises(ValueError, match="num_classes"):
        GSCNN(0, "resnet18")
    model = GSCNN(3, "resnet18").eval()
    with pytest.raises(ValueError, match=r"image must be \(N, 3, H, W\)"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="canny"):
        model(torch.randn(1, 3, 16, 16), torch.zeros(1, 1, 8, 8))


def test_training_with_one_image_per_batch():
    model = GSCNN(3, "resnet18").train()
    out = model(torch.randn(1, 3, 40, 40), torch.zeros(1, 1, 40, 40))
    (out.seg.mean() + out.edge.mean()).backward()
    assert torch.isfinite(out.seg).all()


def test_bfloat16_autocast_forward_and_backward_stay_finite():
    torch.manual_seed(0)
    model = GSCNN(4, "resnet18").train()
    image = torch.randn(2, 3, 40, 56)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, torch.zeros(2, 1, 40, 56))
        loss = out.seg.float().logsumexp(1).mean() + out.edge.float().sigmoid().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow  # the suite's one whole-model Inductor compile
def test_torch_compile_of_the_model_matches_eager():
    torch.manual_seed(0)
    model = GSCNN(3, "resnet18").eval()
    image, canny = torch.randn(1, 3, 32, 48), torch.zeros(1, 1, 32, 48)
    with torch.no_grad():
        eager = model(image, canny).seg
        compiled = torch.compile(lambda x, c: model(x, c).seg)(image, canny)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_same_keys_and_features_as_torchvision(name):
    """Where torchvision is installed: identical parameter names and shapes, and with the same
    weights the same features (ResNet-50 at output stride 8 equals torchvision's
    replace_stride_with_dilation=[False, True, True])."""
    torchvision = oracle("torchvision")
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(
        replace_stride_with_dilation=[False, True, True] if name == "resnet50" else None
    ).eval()
    ours = ResNet(name, output_stride=8 if name == "resnet50" else 16).eval()
    tv_state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in tv_state.items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
    if name != "resnet50":
        return  # torchvision's BasicBlock ResNets cannot dilate
    ours.load_state_dict(tv_state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        mine = ours(x)["layer4"]
        body = torch.nn.Sequential(*list(tv.children())[:-2])
        theirs = body(x)
    torch.testing.assert_close(mine, theirs)
