"""The checks every fused op gets, as a base class (kornia's BaseTester does the same for its
filters). An op's test file subclasses :class:`OpChecks` and describes the op: its name, how to
make inputs for a shape case, the reference, which inputs are differentiable, and bad inputs.
The op's own file then holds only what is particular to it (properties of the math, kernels,
devices).

Checks: fused == reference (float64 and float32 tight) over shapes with odd sizes, 1x1 images and
batch 1; the same outputs from channels_last and non-contiguous inputs; gradcheck in float64;
torch.library.opcheck; torch.compile(fullgraph=True); bad inputs raise errors that name the op
and the argument.
"""

import torch
from torch.library import opcheck

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def channels_last(t):
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def strided(t):
    """The same values as a non-contiguous view (every other column of a wider tensor)."""
    wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
    wide[..., ::2] = t
    return wide[..., ::2]


class OpChecks:
    name: str  # the op: torch.ops.gscnn_ops.<name> and gscnn_ops.<name>
    # Shape cases given to inputs(); include odd sizes, a 1x1 image and batch 1.
    shapes: tuple = ()
    # Positions of the float inputs that gradcheck differentiates (empty: integer outputs).
    differentiable: tuple = ()

    def inputs(self, shape, dtype, seed=0) -> tuple:
        """The op's arguments (tensors and scalars) for ``shape``, floats in ``dtype``."""
        raise NotImplementedError

    def fused(self, *args):
        import gscnn_ops

        return getattr(gscnn_ops, self.name)(*args)

    def reference(self, *args):
        from gscnn_ops import reference

        return getattr(reference, self.name)(*args)

    def bad_inputs(self) -> list:
        """[(args, argument name)]: calls that must fail with an error naming the argument."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the checks
    def _compare(self, got, want, dtype, what):
        for i, (g, w) in enumerate(zip(_as_tuple(got), _as_tuple(want))):
            if w is None:
                continue
            if g.dtype.is_floating_point:
                torch.testing.assert_close(
                    g, w.to(g.dtype), **TOL[dtype], msg=lambda m, i=i: f"{what}[{i}]: {m}"
                )
            else:
                assert torch.equal(g, w), f"{what}[{i}]: integer outputs differ"

    def test_matches_reference(self):
        for dtype in (torch.float64, torch.float32):
            for seed, shape in enumerate(self.shapes):
                args = self.inputs(shape, dtype, seed)
                self._compare(self.fused(*args), self.reference(*args), dtype, f"{shape} {dtype}")

    def test_layouts_give_the_same_outputs(self):
        shape = self.shapes[0]
        args = self.inputs(shape, torch.float64)
        want = self.fused(*args)
        for layout in (channels_last, strided):
            moved = [layout(a) if isinstance(a, torch.Tensor) else a for a in args]
            self._compare(self.fused(*moved), want, torch.float64, f"{layout.__name__}")

    def test_gradcheck(self):
        if not self.differentiable:
            return
        args = list(self.inputs(self.shapes[0], torch.float64))
        for i in self.differentiable:
            args[i] = args[i].detach().requires_grad_()

        def fn(*diff):
            full = list(args)
            for i, d in zip(self.differentiable, diff):
                full[i] = d
            return self.fused(*full)

        assert torch.autograd.gradcheck(fn, tuple(args[i] for i in self.differentiable), atol=1e-7)

    def test_opcheck(self):
        op = getattr(torch.ops.gscnn_ops, self.name).default
        for dtype in (torch.float64, torch.float32):
            args = list(self.inputs(self.shapes[0], dtype))
            for i in self.differentiable:
                args[i] = args[i].detach().requires_grad_()
            opcheck(op, tuple(self._op_args(args)))

    def _op_args(self, args):
        """The schema's arguments from the wrapper's (subclasses add defaults the schema needs)."""
        return args

    def test_compile_fullgraph(self):
        args = self.inputs(self.shapes[0], torch.float32)
        compiled = torch.compile(self.fused, fullgraph=True, backend="aot_eager")
        self._compare(compiled(*args), self.fused(*args), torch.float32, "compiled")

    def test_bad_input_names_the_op_and_the_argument(self):
        cases = self.bad_inputs()
        assert cases
        for args, argument in cases:
            try:
                self.fused(*args)
            except (RuntimeError, ValueError, TypeError) as e:
                message = str(e)
            else:
                raise AssertionError(f"gscnn_ops.{self.name}{args!r}: no error")
            assert message.startswith(f"gscnn_ops.{self.name}: ") and f"'{argument}'" in message, (
                f"gscnn_ops.{self.name}: the error should name the op and '{argument}': {message!r}"
            )
