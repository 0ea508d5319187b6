"""Second derivatives: through the fused ops' backward kernels they are refused with a clear error
(not the silent zeros autograd gives for an op without a derivative); the MLP gate's composite
backward differentiates twice correctly."""

import pytest
import torch

import gscnn_ops
from gscnn_ops import reference

from gated_conv2d_cases import make_inputs, make_mlp_inputs


def second_derivative(fn, inputs, wrt):
    """d/d(wrt) of sum((d out.sum() / d wrt)^2): a gradient penalty."""
    out = fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    (g,) = torch.autograd.grad(out.square().sum(), wrt, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), wrt)
    return gg


def test_gated_conv2d_refuses_double_backward():
    inputs = make_inputs(1, 3, 1, 2, 4, 5, requires_grad=True)
    with pytest.raises(
        RuntimeError,
        match=r"gscnn_ops.gated_conv2d_backward: double backward is "
        r"not supported .* use gscnn_ops.reference.gated_conv2d",
    ):
        second_derivative(gscnn_ops.gated_conv2d, inputs, inputs[4])
    # the way out the message names works, and is not zero
    gg = second_derivative(reference.gated_conv2d, inputs, inputs[4])
    assert gg.abs().max() > 0


def test_boundary_potential_and_dual_task_loss_refuse_double_backward():
    prob = torch.softmax(torch.randn(1, 3, 9, 11, dtype=torch.float64), 1).requires_grad_()
    target = torch.randint(0, 3, (1, 9, 11))
    with pytest.raises(RuntimeError, match=r"gscnn_ops.boundary_potential_backward: double"):
        second_derivative(gscnn_ops.boundary_potential, (prob,), prob)
    with pytest.raises(RuntimeError, match=r"gscnn_ops.dual_task_loss_backward: double"):
        second_derivative(gscnn_ops.dual_task_loss, (prob, target), prob)


def test_first_derivatives_with_create_graph_still_work():
    # create_graph alone (no second derivative taken) must not raise
    inputs = make_inputs(1, 3, 1, 2, 4, 5, requires_grad=True)
    out, _ = gscnn_ops.gated_conv2d(*inputs)
    (g,) = torch.autograd.grad(out.sum(), inputs[4], create_graph=True)
    torch.testing.assert_close(
        g, torch.autograd.grad(reference.gated_conv2d(*inputs)[0].sum(), inputs[4])[0]
    )


def test_mlp_gate_double_backward_is_correct():
    inputs = make_mlp_inputs(1, 3, 1, 4, 2, 3, 4, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda *x: gscnn_ops.gated_conv2d_mlp(*x), inputs)
