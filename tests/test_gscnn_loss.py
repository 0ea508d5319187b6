"""GSCNNLoss: the paper's joint loss on hand-made cases, and an overfit check of the whole model."""

import pytest
import torch

from gscnn_ops.models import GSCNN, GSCNNOutput
from gscnn_ops.models.loss import GSCNNLoss, image_class_weights


def two_region_target(n=2, h=24, w=32):
    target = torch.zeros(n, h, w, dtype=torch.long)
    target[:, :, w // 2 :] = 1
    target[:, :3, :5] = 255  # an ignore patch
    return target


def test_perfect_edges_give_near_zero_bce_and_finite_terms():
    target = two_region_target()
    from gscnn_ops import edge_targets

    edges = edge_targets(target, 2.0, 255)
    seg = torch.nn.functional.one_hot(target.clamp_max(1), 2).permute(0, 3, 1, 2).float() * 30
    perfect = GSCNNOutput(seg=seg, edge=(edges.float() * 2 - 1).unsqueeze(1) * 30)
    terms = GSCNNLoss().eval()(perfect, target)
    assert terms["edge"] < 1e-6
    assert terms["seg"] < 1e-6
    assert torch.isfinite(terms["total"])
    wrong = GSCNNOutput(seg=seg, edge=-perfect.edge)
    assert GSCNNLoss().eval()(wrong, target)["edge"] > 1.0


def test_att_term_is_zero_not_nan_without_confident_edges():
    target = two_region_target()
    out = GSCNNOutput(seg=torch.randn(2, 2, 24, 32), edge=torch.full((2, 1, 24, 32), -10.0))
    terms = GSCNNLoss().eval()(out, target)
    assert terms["att"] == 0 and torch.isfinite(terms["total"])
    confident = GSCNNOutput(seg=out.seg, edge=torch.full((2, 1, 24, 32), 10.0))
    assert GSCNNLoss().eval()(confident, target)["att"] > 0


@pytest.mark.parametrize("class_weighting", [False, True])
def test_fused_and_reference_losses_agree(class_weighting):
    torch.manual_seed(0)
    target = two_region_target()
    target[:, 10:14, 3:9] = 2
    seg = torch.randn(2, 3, 24, 32, dtype=torch.float64, requires_grad=True)
    edge = torch.randn(2, 1, 24, 32, dtype=torch.float64, requires_grad=True)
    results = []
    for fused in (True, False):
        terms = GSCNNLoss(fused=fused, class_weighting=class_weighting).eval()(
            GSCNNOutput(seg=seg, edge=edge), target
        )
        grads = torch.autograd.grad(terms["total"], (seg, edge))
        results.append(({k: v.detach() for k, v in terms.items()}, grads))
    (a, ga), (b, gb) = results
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-9, msg=lambda m: f"{k}: {m}")
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)


def test_release_class_weights():
    target = torch.tensor([[[0, 0, 0, 1], [255, 255, 0, 0]]])
    w = image_class_weights(target, 3, 255)
    torch.testing.assert_close(w, torch.tensor([[1 + 1 - 5 / 6, 1 + 1 - 1 / 6, 1.0]]))


def test_bad_target_shape():
    with pytest.raises(ValueError, match="GSCNNLoss: target must be"):
        GSCNNLoss()(
            GSCNNOutput(seg=torch.randn(1, 2, 8, 8)), torch.zeros(1, 4, 4, dtype=torch.long)
        )


@pytest.mark.slow
def test_overfit_one_small_batch():
    torch.manual_seed(0)
    model = GSCNN(3, "resnet18", output_stride=16).train()
    loss_fn = GSCNNLoss()
    image = torch.randn(2, 3, 32, 32)
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, 8:24, 8:24] = 1
    target[:, 12:20, 12:20] = 2
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for step in range(150):
        terms = loss_fn(model(image), target)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        if first is None:
            first = {k: v.item() for k, v in terms.items()}
    last = {k: v.item() for k, v in terms.items()}
    assert last["total"] < 0.3 * first["total"], (first, last)
    assert last["seg"] < 0.2 * first["seg"], (first, last)


def test_terms_by_hand_on_a_tiny_map():
    # One row of six pixels: classes 0 0 0 0 1, then an ignore pixel. With edge radius 1 the edge
    # targets are the two pixels at the 0|1 boundary (x = 3, 4): 2 positives, 3 negatives among
    # the 5 valid pixels. Every term below is written out from the paper / the release's formulas
    # with plain floats, not with the code under test.
    import math

    target = torch.tensor([[[0, 0, 0, 0, 1, 255]]])
    seg = torch.tensor(
        [[[[2.0, 1.0, 0.5, -1.0, 0.0, 3.0]], [[0.0, 0.5, 1.0, 1.0, 2.0, -3.0]]]],
        dtype=torch.float64,
    )
    edge = torch.tensor([[[[-3.0, -1.0, 0.5, 2.0, 1.0, 4.0]]]], dtype=torch.float64)
    labels = [0, 0, 0, 0, 1]
    is_edge = [0, 0, 0, 1, 1]

    def ce(x):  # cross-entropy of pixel x against its label
        a, b = seg[0, 0, 0, x].item(), seg[0, 1, 0, x].item()
        z = (a, b)[labels[x]]
        return math.log(math.exp(a) + math.exp(b)) - z

    def bce(x):  # binary cross-entropy on the logit
        l, y = edge[0, 0, 0, x].item(), is_edge[x]
        return math.log1p(math.exp(l)) - y * l

    valid = range(5)
    seg_term = sum(ce(x) for x in valid) / 5
    # class balance: positives weighted by the fraction of negatives (3/5), negatives by 2/5
    edge_term = sum((3 / 5 if is_edge[x] else 2 / 5) * bce(x) for x in valid) / 5
    # regulariser 2: CE summed over the valid pixels with sigmoid(edge) > 0.8, i.e. logit > 1.386
    # (x = 3), divided by the 5 valid pixels (att_norm="valid", the default; the release's
    # "selected" divides by the 1 selected pixel)
    att_term = ce(3) / 5
    # release class weights: 1 + (1 - frequency) for present classes: 1.2 for class 0, 1.8 for 1
    weighted_seg = sum((1.2, 1.8)[labels[x]] * ce(x) for x in valid) / (4 * 1.2 + 1.8)

    loss = GSCNNLoss(edge_radius=1.0, dual_weight=0.0).eval()
    terms = loss(GSCNNOutput(seg=seg, edge=edge), target)
    for name, want in [("seg", seg_term), ("edge", edge_term), ("att", att_term)]:
        assert terms[name].item() == pytest.approx(want, rel=1e-6), name
    assert terms["total"].item() == pytest.approx(seg_term + 20 * edge_term + att_term, rel=1e-6)
    selected = GSCNNLoss(edge_radius=1.0, dual_weight=0.0, att_norm="selected").eval()
    assert selected(GSCNNOutput(seg=seg, edge=edge), target)["att"].item() == pytest.approx(
        ce(3), rel=1e-6
    )
    weighted = GSCNNLoss(edge_radius=1.0, dual_weight=0.0, class_weighting=True).eval()
    assert weighted(GSCNNOutput(seg=seg, edge=edge), target)["seg"].item() == pytest.approx(
        weighted_seg, rel=1e-6
    )


def _one_confident_pixel(n=2, h=16, w=20, classes=3):
    torch.manual_seed(0)
    seg = torch.randn(n, classes, h, w)
    target = torch.randint(0, classes, (n, h, w))
    target[0, :2, :2] = 255
    edge = torch.full((n, 1, h, w), -5.0)
    edge[1, 0, 7, 9] = 5.0  # the only pixel with edge probability > 0.8
    return seg, edge, target


@pytest.mark.parametrize("norm", ["selected", "valid"])
def test_regulariser_2_is_the_paper_sum_over_its_normaliser(norm):
    seg, edge, target = _one_confident_pixel()
    att = GSCNNLoss(att_norm=norm).eval()(GSCNNOutput(seg=seg, edge=edge), target)["att"]
    ce = torch.nn.functional.cross_entropy(seg[1:2, :, 7, 9], target[1:2, 7, 9])
    count = 1 if norm == "selected" else int((target != 255).sum())
    torch.testing.assert_close(att, ce / count)


def test_valid_normalisation_changes_little_when_one_pixel_crosses_the_threshold():
    """The instability the option exists for: with a handful of selected pixels the release's
    normalisation jumps from 0 to a whole CE when one pixel crosses 0.8; over the valid pixels
    the same change is that CE / N."""
    seg, edge, target = _one_confident_pixel()
    below = edge.clone()
    below[1, 0, 7, 9] = 1.38  # just under the threshold (logit of 0.8 = 1.386)
    n_valid = int((target != 255).sum())
    for norm in ("selected", "valid"):
        loss = GSCNNLoss(att_norm=norm).eval()
        jump = float(loss(GSCNNOutput(seg, edge), target)["att"]) - float(
            loss(GSCNNOutput(seg, below), target)["att"]
        )
        ce = float(torch.nn.functional.cross_entropy(seg[1:2, :, 7, 9], target[1:2, 7, 9]))
        assert jump == pytest.approx(ce if norm == "selected" else ce / n_valid, rel=1e-5)


def test_bad_att_norm_is_refused():
    with pytest.raises(ValueError, match="att_norm must be one of"):
        GSCNNLoss(att_norm="pixels")


@pytest.mark.slow
def test_att_stability_script_measures_both_normalisations(tmp_path):
    """scripts/att_stability.py, shrunk: it trains, perturbs and writes what it prints."""
    import json
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "att_stability.py")
    out = tmp_path / "att.json"
    args = ["--seeds", "0", "--steps", "1", "--perturbations", "2", "--images", "2"]
    subprocess.run(
        [sys.executable, script, *args, "--size", "32", "64", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["stage"] for r in rows] == ["init", "step 1"]
    for r in rows:
        for norm in ("att_selected", "att_valid"):
            assert r[norm]["min"] <= r[norm]["mean"] <= r[norm]["max"]
        # Divided by at least as many pixels, the "valid" value is never the larger one.
        assert r["att_valid"]["max"] <= r["att_selected"]["max"] + 1e-6
