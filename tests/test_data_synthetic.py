"""The embedded synthetic dataset: deterministic, Cityscapes-like, with thin structures."""

import pytest
import torch

from gscnn_ops.data import SyntheticStreets, render_scene
from gscnn_ops.data.synthetic import CAR, IGNORE, POLE, ROAD, SKY


def test_deterministic_from_the_seed():
    a, b = SyntheticStreets(4, seed=3), SyntheticStreets(4, seed=3)
    for i in range(4):
        (ia, la), (ib, lb) = a[i], b[i]
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert not torch.equal(a[0][1], SyntheticStreets(4, seed=4)[0][1])
    assert not torch.equal(a[0][1], a[1][1])


@pytest.mark.parametrize("size", [(16, 16), (97, 201), (128, 256)])
def test_shapes_dtypes_and_labels(size):
    image, label = render_scene(7, *size)
    assert image.shape == (3, *size) and image.dtype == torch.uint8
    assert label.shape == size and label.dtype == torch.long
    values = set(label.unique().tolist())
    assert values <= set(range(19)) | {IGNORE}


def test_scenes_have_the_structures_that_matter():
    seen = torch.zeros(256, dtype=torch.long)
    thin = 0
    for i in range(16):
        _, label = render_scene(i)
        seen += torch.bincount(label.flatten(), minlength=256)
        pole_cols = (label == POLE).any(0).nonzero().flatten()
        thin += int(len(pole_cols) > 0)
    for k in (ROAD, SKY, CAR, POLE):
        assert seen[k] > 0, k
    assert thin >= 12  # poles (1-3 px wide) in most scenes


def test_texture_makes_colour_alone_insufficient():
    image, label = render_scene(1)
    road = image[:, label == ROAD].float()
    assert road.std(dim=1).min() > 3  # noise and texture: not one flat colour per class


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 16"):
        render_scene(0, 8, 8)
    with pytest.raises(ValueError, match="length"):
        SyntheticStreets(0)
    with pytest.raises(IndexError):
        SyntheticStreets(2)[2]


def _runs(row: torch.Tensor):
    """Lengths of the runs of True in a 1-D bool tensor."""
    edges = torch.diff(torch.cat([row.new_zeros(1), row, row.new_zeros(1)]).int())
    return ((edges == -1).nonzero() - (edges == 1).nonzero()).flatten().tolist()


def test_thin_structures_at_several_distances():
    """Poles 1 px wide near the horizon and several px near the camera, so that thin-class
    IoU measures more than one scale."""
    widths = []
    for i in range(16):
        _, label = render_scene(i, 96, 192)
        for row in label == POLE:
            widths += _runs(row)
    counts = torch.bincount(torch.tensor(widths))
    assert counts[1] > 0 and counts[2] > 0 and counts[3:].sum() > 0.1 * counts.sum()


def test_canny_alone_does_not_give_the_boundaries_away():
    """Windows, road markings, shadows, texture and noise put most Canny edges off the class
    boundaries (its precision as a boundary detector is low), and camouflaged objects leave
    some boundaries without an edge: the network has to learn which edges matter."""
    import torch.nn.functional as F

    from gscnn_ops.data import prepare
    from gscnn_ops.ops import edge_targets

    def near(m):
        return F.max_pool2d(m[None, None].float(), 3, 1, 1)[0, 0] > 0

    precision = []
    for i in range(8):
        image, label = render_scene(i, 96, 192)
        canny = prepare(image, label)["canny"][0] > 0
        boundary = edge_targets(label[None], 1.0, IGNORE)[0]
        precision.append(float((canny & near(boundary)).sum() / canny.sum()))
    assert sum(precision) / len(precision) < 0.5
