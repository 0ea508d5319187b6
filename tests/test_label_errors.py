"""Bad labels, found by the kernels where they load the labels (csrc/common/label_errors.h): one
message format on every device naming the op, the argument, the label and its [n, y, x], the
first bad pixel in (n, y, x) order whatever the launch; raised at once on the CPU and on the
emulated GPU; on CUDA, a NaN loss and the error at the op's next call or at
gscnn_ops.check_errors(), without a host synchronisation in between."""

import math

import pytest
import torch

import gscnn_ops

import emulation
from conftest import requires_cuda

ops = torch.ops.gscnn_ops


def prob_and_target(N=2, K=3, H=9, W=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    prob = torch.softmax(torch.randn(N, K, H, W, generator=g, dtype=torch.float64), 1)
    return prob, torch.randint(0, K, (N, H, W), generator=g)


def loss_calls(prob, target):
    """The dual-task loss and its backward on the CPU and on the emulated GPU."""
    emulation.load()
    t = torch.ops.gscnn_testing
    one = torch.tensor(1.0, dtype=torch.float64)
    count = torch.tensor(50.0, dtype=torch.float64)
    force = emulation.launch(7, 2, (4, 5))
    return {
        "cpu forward": lambda: ops.dual_task_loss(prob, target, 1.0, 1e-2, 255),
        "cpu backward": lambda: ops.dual_task_loss_backward(
            one, prob, target, count, 1.0, 1e-2, 255
        ),
        "emulated forward": lambda: t.dual_task_loss(
            prob, target, 1.0, 1e-2, 255, emulation.gpu(), force
        ),
        "emulated backward": lambda: t.dual_task_loss_backward(
            one, prob, target, count, 1.0, 1e-2, 255, emulation.gpu(), force
        ),
    }


@pytest.mark.parametrize("value,where", [(3, (1, 4, 7)), (-1, (0, 0, 0)), (254, (1, 8, 9))])
def test_the_first_bad_label_is_named_with_its_position(value, where):
    prob, target = prob_and_target()
    target[where] = value
    target[1, 8, 10] = 77  # the last pixel: a later bad label, never the one reported
    for name, call in loss_calls(prob, target).items():
        with pytest.raises(
            RuntimeError,
            match=(
                rf"dual_task_loss(_backward)?: argument 'target' has label {value} at "
                rf"\[{where[0]}, {where[1]}, {where[2]}\]; expected a class in \[0, 3\) or "
                rf"ignore_index 255$"
            ),
        ):
            call()


def test_ignore_index_and_class_labels_are_fine():
    prob, target = prob_and_target()
    target[0, 2:4, 3:6] = 255
    for call in loss_calls(prob, target).values():
        assert torch.isfinite(torch.as_tensor(call()[0])).all()
    target[0, 2:4, 3:6] = -1  # -1 is fine when it is the ignore index
    assert torch.isfinite(ops.dual_task_loss(prob, target, 1.0, 1e-2, -1)[0])


def test_extreme_labels_and_positions_saturate_in_the_message():
    prob, target = prob_and_target(N=1, K=2, H=1, W=70000)
    target[0, 0, 66000] = 100000
    with pytest.raises(RuntimeError, match=r"has label >= 32768 at \[0, 0, >= 65535\]"):
        ops.dual_task_loss(prob, target, 1.0, 1e-2, 255)
    target[0, 0, 5] = -(2**40)
    with pytest.raises(RuntimeError, match=r"has label <= -32767 at \[0, 0, 5\]"):
        ops.dual_task_loss(prob, target, 1.0, 1e-2, 255)


def test_boundary_fscore_reports_pred_before_target():
    pred = torch.zeros(2, 5, 70, dtype=torch.int64)
    target = torch.zeros(2, 5, 70, dtype=torch.int64)
    pred[1, 2, 66] = 9
    target[0, 1, 1] = 8
    with pytest.raises(RuntimeError, match=r"argument 'pred' has label 9 at \[1, 2, 66\]"):
        gscnn_ops.boundary_fscore_counts(pred, target, 3, [1], 255)
    pred[1, 2, 66] = 0
    with pytest.raises(RuntimeError, match=r"argument 'target' has label 8 at \[0, 1, 1\]"):
        gscnn_ops.boundary_fscore_counts(pred, target, 3, [1], 255)


def test_check_errors_is_a_no_op_without_pending_errors():
    gscnn_ops.check_errors()
    gscnn_ops.check_errors("cpu")


# --- CUDA: no host sync, so the error comes later --------------------------------------------


@requires_cuda
def test_cuda_bad_label_gives_nan_then_raises_at_check_errors():
    prob, target = prob_and_target()
    target[1, 4, 7] = 3
    loss, count = ops.dual_task_loss(prob.cuda(), target.cuda(), 1.0, 1e-2, 255)  # no raise here
    assert math.isnan(loss.item()) and math.isnan(count.item())
    with pytest.raises(
        RuntimeError,
        match=r"dual_task_loss: argument 'target' has label 3 at "
        r"\[1, 4, 7\].*found on cuda:0",
    ):
        gscnn_ops.check_errors()
    gscnn_ops.check_errors()  # reported once: the status is clear again
    good = ops.dual_task_loss(prob.cuda(), target.clamp(0, 2).cuda(), 1.0, 1e-2, 255)[0]
    assert torch.isfinite(good)


@requires_cuda
def test_cuda_bad_label_raises_at_the_next_call():
    prob, target = prob_and_target()
    bad = target.clone()
    bad[0, 2, 3] = -5
    ops.dual_task_loss(prob.cuda(), bad.cuda(), 1.0, 1e-2, 255)
    torch.cuda.synchronize()  # the status word's copy to the host has landed
    with pytest.raises(RuntimeError, match=r"has label -5 at \[0, 2, 3\].*by an earlier call"):
        ops.dual_task_loss(prob.cuda(), target.cuda(), 1.0, 1e-2, 255)
    ops.dual_task_loss(prob.cuda(), target.cuda(), 1.0, 1e-2, 255)  # and only once


@requires_cuda
def test_cuda_bad_label_in_boundary_fscore():
    pred = torch.zeros(2, 5, 70, dtype=torch.int64, device="cuda")
    target = torch.zeros(2, 5, 70, dtype=torch.int64, device="cuda")
    target[1, 3, 65] = 4
    gscnn_ops.boundary_fscore_counts(pred, target, 3, [1], 255)
    with pytest.raises(RuntimeError, match=r"argument 'target' has label 4 at \[1, 3, 65\]"):
        gscnn_ops.check_errors("cuda")
