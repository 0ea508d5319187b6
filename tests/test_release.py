"""The authors' release in our model: its checkpoints convert key for key, its forward is ours
with ``head="release"``, its Canny input is reproduced, and bad files are refused by name.

``data/release_gscnn_keys.json`` lists the parameter and buffer names and shapes of the
release's ``network.gscnn.GSCNN(num_classes=19)`` (read off the release, which we cannot
ship). ``release_forward`` below is the release's forward written out as functional PyTorch
over those names, from reading its code (pre-activation WideResNet-38 with max pooling, shape
stream on full-resolution features, ASPP concatenated as [pooling, edge, 1x1, rates], decoder
skip from the stride-2 module, ``align_corners=True`` everywhere but the last resize, Canny as
0/255): it shares nothing with our modules, so it checks the renaming, the permutations and the
folded Canny scale together. ``scripts/compare_with_release.py`` runs the release's own code
beside ours where a checkout of it is at hand (see benchmarks/RESULTS.md).
"""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gscnn_ops.models import GSCNN, WiderResNet38, load_release, release_canny
from gscnn_ops.models.release import (
    ReleaseCheckpointError,
    convert_release_state_dict,
    numpy_uint8,
    release_model,
)

from conftest import oracle

KEYS = json.load(open(os.path.join(os.path.dirname(__file__), "data", "release_gscnn_keys.json")))


def random_release_state(seed=0, num_classes=19, prefix="module."):
    """A release state dict with random values (BatchNorm statistics included)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in KEYS.items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(7)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bias")):
            value = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # BatchNorm weight
            value = torch.rand(shape, generator=g) + 0.5
        else:  # convolution: variance-preserving scale
            value = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        if key.startswith("final_seg.6."):
            value = value[:num_classes]
        state[prefix + key] = value
    return state


# ----------------------------------------------------------------- the release's forward, written o


def release_forward(sd, image, canny255):
    """(seg logits, edge probability) of the release's GSCNN in eval mode; ``sd`` has the
    release's names without ``module.``; ``canny255`` holds 0 and 255, as its forward makes."""

    def conv(x, p, **kw):
        return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias"), **kw)

    def bn(x, p):
        return F.batch_norm(
            x,
            sd[p + ".running_mean"],
            sd[p + ".running_var"],
            sd[p + ".weight"],
            sd[p + ".bias"],
            False,
            0.0,
            1e-5,
        )

    def up(x, size, align_corners=True):
        return F.interpolate(x, size, mode="bilinear", align_corners=align_corners)

    def identity_block(x, p, stride, dil):
        a = F.relu(bn(x, p + ".bn1.0"))
        shortcut = conv(a, p + ".proj_conv", stride=stride) if p + ".proj_conv.weight" in sd else x
        if p + ".convs.conv3.weight" in sd:  # bottleneck
            h = F.relu(bn(conv(a, p + ".convs.conv1", stride=stride), p + ".convs.bn2.0"))
            h = F.relu(
                bn(conv(h, p + ".convs.conv2", padding=dil, dilation=dil), p + ".convs.bn3.0")
            )
            h = conv(h, p + ".convs.conv3")
        else:
            h = conv(a, p + ".convs.conv1", stride=stride, padding=dil, dilation=dil)
            h = conv(
                F.relu(bn(h, p + ".convs.bn2.0")), p + ".convs.conv2", padding=dil, dilation=dil
            )
        return h + shortcut

    def module(x, mod, blocks, stride, dil):
        for b in range(blocks):
            x = identity_block(x, f"mod{mod}.block{b + 1}", stride if b == 0 else 1, dil)
        return x

    def basic_block(x, p):
        h = F.relu(bn(conv(x, p + ".conv1", padding=1), p + ".bn1"))
        return F.relu(bn(conv(h, p + ".conv2", padding=1), p + ".bn2") + x)

    def gated_conv(x, gate, p):
        a = bn(torch.cat([x, gate], 1), p + "._gate_conv.0")
        a = conv(F.relu(conv(a, p + "._gate_conv.1")), p + "._gate_conv.3")
        alpha = torch.sigmoid(bn(a, p + "._gate_conv.4"))
        return F.conv2d(x * (alpha + 1), sd[p + ".weight"])

    size = image.shape[-2:]
    pool = dict(kernel_size=3, stride=2, padding=1)
    m1 = conv(image, "mod1.conv1", padding=1)
    m2 = module(F.max_pool2d(m1, **pool), 2, 3, 1, 1)
    m3 = module(F.max_pool2d(m2, **pool), 3, 3, 1, 1)
    m4 = module(m3, 4, 6, 2, 1)
    m7 = module(module(module(m4, 5, 3, 1, 2), 6, 1, 1, 4), 7, 1, 1, 4)
    s3, s4, s7 = (up(conv(m, p), size) for m, p in ((m3, "dsn3"), (m4, "dsn4"), (m7, "dsn7")))
    cs = basic_block(up(m1, size), "res1")
    cs = gated_conv(conv(up(cs, size), "d1"), s3, "gate1")
    cs = gated_conv(conv(up(basic_block(cs, "res2"), size), "d2"), s4, "gate2")
    cs = gated_conv(conv(up(basic_block(cs, "res3"), size), "d3"), s7, "gate3")
    edge = torch.sigmoid(up(conv(cs, "fuse"), size))
    acts = torch.sigmoid(conv(torch.cat([edge, canny255], 1), "cw"))

    fsize = m7.shape[-2:]
    img = F.relu(bn(conv(m7.mean((2, 3), keepdim=True), "aspp.img_conv.0"), "aspp.img_conv.1"))
    feats = [
        up(img, fsize),
        F.relu(bn(conv(up(acts, fsize), "aspp.edge_conv.0"), "aspp.edge_conv.1")),
    ]
    for i, rate in enumerate((0, 12, 24, 36)):
        pad = dict(padding=rate, dilation=rate) if rate else {}
        feats.append(F.relu(bn(conv(m7, f"aspp.features.{i}.0", **pad), f"aspp.features.{i}.1")))
    x = up(conv(torch.cat(feats, 1), "bot_aspp"), m2.shape[-2:])
    x = torch.cat([conv(m2, "bot_fine"), x], 1)
    x = F.relu(bn(conv(x, "final_seg.0", padding=1), "final_seg.1"))
    x = F.relu(bn(conv(x, "final_seg.3", padding=1), "final_seg.4"))
    return up(conv(x, "final_seg.6"), size, align_corners=False), edge


@pytest.fixture(scope="module")
def release_pair():
    state = random_release_state(seed=3)
    model = load_release(state, fused=True).double()
    plain = {k[len("module.") :]: v.double() for k, v in state.items()}
    return state, plain, model


def _image(seed, n=2, h=37, w=52):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n, 3, h, w), generator=g).double()
    raw[..., ::5, :] = 255.0  # sharp lines, so that the Canny maps are not empty
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(3, 1, 1)
    return (raw / 255 - mean) / std


def test_forward_equals_the_release_forward(release_pair):
    _, plain, model = release_pair
    image = _image(0)
    canny = release_canny(image)
    assert 0 < canny.sum() < canny.numel()  # the Canny branch is exercised
    with torch.no_grad():
        seg_ref, edge_ref = release_forward(plain, image, 255.0 * canny.double())
        out = model(image, canny.double())
    assert out.seg.shape == (2, 19, 37, 52)
    torch.testing.assert_close(out.seg, seg_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(torch.sigmoid(out.edge), edge_ref, rtol=1e-9, atol=1e-10)


def test_the_canny_input_matters(release_pair):
    """The comparison above would hide a wrong Canny scale if the map had no effect."""
    _, plain, model = release_pair
    image = _image(1, n=1)
    canny = release_canny(image).double()
    with torch.no_grad():
        seg_ref, _ = release_forward(plain, image, 255.0 * canny)
        wrong = model(image, canny / 255.0).seg  # as if the 255 were not folded in
    assert (wrong - seg_ref).abs().max() > 1e-4


def test_reference_mode_and_float32_agree(release_pair):
    state, _, model = release_pair
    image = _image(2, n=1, h=33, w=40)
    ref = load_release(state, fused=False).double()
    canny = release_canny(image).double()
    with torch.no_grad():
        a, b = model(image, canny), ref(image, canny)
        c = model.float()(image.float(), canny.float())
    model.double()
    torch.testing.assert_close(a.seg, b.seg, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(c.seg.double(), a.seg, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------- conversion


def test_every_key_is_used_and_none_left_over():
    state = random_release_state()
    converted = convert_release_state_dict(state)
    model = release_model(19)
    assert set(converted) == set(model.state_dict())
    model.load_state_dict(converted, strict=True)
    unused = [k for k in KEYS if k.startswith("dsn1.")]
    assert len(converted) == len(KEYS) - len(unused)
    # The release's parameters, less the unused dsn1, are exactly ours.
    n = sum(
        math.prod(s)
        for k, s in KEYS.items()
        if not k.startswith("dsn1.")
        and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert n == sum(p.numel() for p in model.parameters()) == 137_278_125


def test_renamed_values_are_the_release_values():
    state = random_release_state(prefix="")
    converted = convert_release_state_dict(state)
    assert torch.equal(
        converted["trunk.mod6.block1.convs.conv3.weight"], state["mod6.block1.convs.conv3.weight"]
    )
    assert torch.equal(
        converted["shape.gcls.1.gate_net.4.weight"], state["gate2._gate_conv.4.weight"]
    )
    assert torch.equal(converted["shape.gates.2.bias"], state["dsn7.bias"])
    assert torch.equal(converted["low_level.0.weight"], state["bot_fine.weight"])
    w = state["cw.weight"]
    assert torch.equal(converted["edge_fuse.weight"], torch.stack([w[:, 0], 255 * w[:, 1]], 1))


def test_number_of_classes_comes_from_the_weights():
    model = load_release(random_release_state(num_classes=7))
    assert model.num_classes == 7 and not model.training and model.head == "release"
    with torch.no_grad():
        out = model(torch.randn(1, 3, 24, 24))
    assert out.seg.shape == (1, 7, 24, 24)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.update({"module.extra.weight": torch.zeros(1)}), "not the release GSCNN's"),
        (lambda s: s.pop("module.gate2._gate_conv.1.weight"), "missing"),
        (lambda s: s.update({"module.d2.weight": torch.zeros(16, 31, 1, 1)}), "wrong shape"),
        (lambda s: s.pop("module.final_seg.6.weight"), "not a release GSCNN state dict"),
    ],
)
def test_damaged_state_dicts_are_refused(tmp_path, damage, message):
    state = random_release_state()
    damage(state)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state, "epoch": 1}, path)
    with pytest.raises(ReleaseCheckpointError, match=message) as e:
        load_release(str(path))
    assert str(path) in str(e.value)


def test_checkpoint_file_as_train_py_writes_it(tmp_path):
    """{"state_dict", "optimizer", "epoch", "mean_iu" (a NumPy scalar), "command"}: the NumPy
    scalar is allowed, nothing else outside weights_only's set."""
    state = random_release_state(seed=5)
    path = tmp_path / "best_epoch_1.pth"
    torch.save(
        {
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
            "epoch": 1,
            "mean_iu": np.float64(0.808),
            "command": "--arch network.gscnn.GSCNN",
        },
        path,
    )
    a = load_release(str(path))
    b = load_release(state)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


class Evil:
    """An arbitrary object: weights_only loading must refuse to build it."""


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": random_release_state(), "hook": Evil()}, path)
    with pytest.raises(ReleaseCheckpointError, match="weights_only") as e:
        load_release(str(path))
    assert str(path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_release(str(tmp_path / "nowhere.pth"))


# ----------------------------------------------------------------- the trunk


def test_imagenet_file_of_the_release_loads(tmp_path):
    """wider_resnet38.pth.tar: {"state_dict": {"module.mod1.conv1.weight", ...,
    "module.bn_out.0.*", "module.classifier.fc.*"}}; the classifier and its BN-ReLU are unused."""
    g = torch.Generator().manual_seed(0)
    state = {
        f"module.{k}": torch.randn(s, generator=g) if s else torch.tensor(1)
        for k, s in KEYS.items()
        if k.startswith("mod")
    }
    for k in ("weight", "bias", "running_mean", "running_var"):
        state[f"module.bn_out.0.{k}"] = torch.ones(4096)
    state["module.classifier.fc.weight"] = torch.zeros(1000, 4096)
    state["module.classifier.fc.bias"] = torch.zeros(1000)
    path = tmp_path / "wider_resnet38.pth.tar"
    torch.save({"state_dict": state}, path)
    model = GSCNN(19, "wrn38", pretrained=str(path))
    assert model.load_report == {"missing": [], "unexpected": []}
    for k, v in model.trunk.state_dict().items():
        assert torch.equal(v, state["module." + k]), k


def test_wrn38_is_the_release_trunk():
    trunk = WiderResNet38().eval()
    assert isinstance(trunk.pool2, torch.nn.MaxPool2d) and isinstance(
        trunk.pool3, torch.nn.MaxPool2d
    )
    drop = {name: m.p for name, m in trunk.named_modules() if isinstance(m, torch.nn.Dropout2d)}
    assert drop == {"mod6.block1.convs.dropout": 0.3, "mod7.block1.convs.dropout": 0.5}
    assert list(trunk.mod6.block1.convs._modules) == [
        "conv1",
        "bn2",
        "conv2",
        "bn3",
        "dropout",
        "conv3",
    ]
    assert trunk.mod4.block1.convs.conv1.stride == (2, 2)
    assert [trunk.mod5.block1.convs.conv1.dilation, trunk.mod7.block1.convs.conv2.dilation] == [
        (2, 2),
        (4, 4),
    ]
    assert not hasattr(trunk, "bn_out")
    with torch.no_grad():
        f = trunk(torch.randn(1, 3, 32, 48))
    assert f["stride2"].shape == (1, 128, 16, 24)
    assert (f["layer4"] < 0).any()  # mod7's output as it is, no final BN-ReLU


def test_release_head_structure():
    with torch.device("meta"):
        model = GSCNN(19, "wrn38", head="release")
    assert model.decoder[-1].bias is None and model.edge_fuse.bias is None
    assert all(r.bias is not None for r in model.shape.reduce)
    assert all(g.gate == "mlp" for g in model.shape.gcls)
    assert isinstance(model.aspp.pool[1], torch.nn.BatchNorm2d)
    assert len(model.aspp.project) == 1 and len(model.low_level) == 1
    assert model.low_level[0].in_channels == 128
    with pytest.raises(ValueError, match="head must be one of"):
        GSCNN(19, "resnet18", head="authors")


def test_release_head_trains_on_other_trunks():
    """A constructible variant: it trains (a ResNet's stride-2 stem feeds its decoder)."""
    torch.manual_seed(0)
    model = GSCNN(3, "resnet18", head="release").train()
    out = model(torch.randn(2, 3, 40, 40), torch.rand(2, 1, 40, 40).round())
    (out.seg.square().mean() + out.edge.sigmoid().mean()).backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------- release Canny


def test_numpy_uint8_is_numpy_cast():
    values = np.array(
        [
            -1.5,
            -0.5,
            -0.0,
            0.5,
            1.99,
            254.9,
            255.5,
            256.5,
            -255.5,
            -256.5,
            300.7,
            -300.7,
            511.9,
            1000.2,
            -1000.2,
            -2.1179,
            2.64,
        ],
        dtype=np.float32,
    )
    expected = values.astype(np.uint8)
    assert numpy_uint8(torch.from_numpy(values)).tolist() == expected.tolist()
    assert numpy_uint8(torch.tensor([-1.5])).item() == 255
    with pytest.raises(ValueError, match="NaN"):
        numpy_uint8(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="floating"):
        numpy_uint8(torch.tensor([1], dtype=torch.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_release_canny_is_cv2_canny_of_the_numpy_cast(seed):
    cv2 = oracle("cv2")
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 3, 31, 45, generator=g) * 1.5  # normalised values, both signs
    image[0, :, 10:20, 5:30] = -1.7  # a block that wraps to 255 next to 0/1 values
    image[1, 1, ::4, :] = 2.6
    got = release_canny(image)
    assert got.shape == (2, 1, 31, 45) and got.dtype == torch.float32
    for i in range(2):
        array = image[i].numpy().transpose(1, 2, 0).astype(np.uint8)
        expected = cv2.Canny(array, 10, 100)
        assert set(np.unique(expected)) <= {0, 255}
        np.testing.assert_array_equal(got[i, 0].numpy(), expected / 255.0)
    assert got.sum() > 0
    with pytest.raises(ValueError, match="release_canny: image must be"):
        release_canny(torch.zeros(3, 8, 8))


def test_inference_gives_release_models_the_release_canny(release_pair):
    from gscnn_ops.engine.inference import infer

    _, plain, model = release_pair
    image = _image(4, n=1, h=29, w=35)
    with torch.no_grad():
        seg_ref, _ = release_forward(plain, image, 255.0 * release_canny(image).double())
    out = infer(model, image, torch.zeros(1, 1, 29, 35, dtype=torch.float64))  # canny ignored
    torch.testing.assert_close(out.seg.double(), seg_ref, rtol=1e-5, atol=1e-5)
