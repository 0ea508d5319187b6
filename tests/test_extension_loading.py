"""How the package loads its compiled library and explains failures, and the command line."""

import json

import pytest
import torch

import gscnn_ops
from gscnn_ops import _extension, cli


def test_build_info_matches_running_torch_and_registered_kernels():
    info = gscnn_ops.build_info()
    assert info["torch_version"] == torch.__version__
    assert gscnn_ops.has_cuda_kernels() == bool(info["with_cuda"])


def test_torch_mismatch_is_explained_with_the_rebuild_command(monkeypatch):
    monkeypatch.setattr(_extension, "build_info", lambda: {"torch_version": "1.0.0+old"})
    with pytest.raises(ImportError) as excinfo:
        _extension.load()
    message = str(excinfo.value)
    assert "built against torch 1.0.0+old" in message
    assert torch.__version__ in message
    assert "pip install --no-build-isolation --force-reinstall --no-deps ." in message


def test_missing_cuda_kernels_warn_when_a_gpu_is_there(monkeypatch):
    monkeypatch.setattr(
        _extension, "build_info", lambda: {"torch_version": torch.__version__, "with_cuda": False}
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(UserWarning, match="built without its CUDA kernels"):
        _extension.load()


def test_cli_info_and_bad_arguments(capsys):
    assert cli.main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["torch_version"] == torch.__version__
    with pytest.raises(SystemExit):
        cli.main(["train", "--amp", "fp8"])  # not a choice
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


class _PretendCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA: enough to reach the ops' device check."""

    @property
    def device(self):
        return torch.device("cuda", 0)


@pytest.mark.parametrize(
    "op", ["gated_conv2d", "dual_task_loss", "edge_targets", "boundary_fscore_counts"]
)
def test_cuda_tensors_on_a_build_without_cuda_kernels(monkeypatch, op):
    # What a CPU-only build says to a user with CUDA tensors (not the dispatcher's "could not run
    # ... with arguments from the CUDA backend"), checked without a GPU.
    from gscnn_ops import ops
    from gscnn_ops.ops import _common

    monkeypatch.setattr(_common, "HAS_CUDA_KERNELS", False)
    cuda = lambda t: torch.Tensor._make_subclass(_PretendCuda, t)  # noqa: E731
    calls = {
        "gated_conv2d": lambda: ops.gated_conv2d(
            cuda(torch.zeros(1, 2, 3, 3)),
            torch.zeros(1, 1, 3, 3),
            torch.zeros(1, 3, 1, 1),
            torch.zeros(1),
            torch.zeros(2, 2, 1, 1),
        ),
        "dual_task_loss": lambda: ops.dual_task_loss(
            cuda(torch.zeros(1, 2, 3, 3)), torch.zeros(1, 3, 3, dtype=torch.long)
        ),
        "edge_targets": lambda: ops.edge_targets(cuda(torch.zeros(1, 3, 3, dtype=torch.long))),
        "boundary_fscore_counts": lambda: ops.boundary_fscore_counts(
            cuda(torch.zeros(1, 3, 3, dtype=torch.long)),
            torch.zeros(1, 3, 3, dtype=torch.long),
            2,
            [1],
            255,
        ),
    }
    with pytest.raises(
        RuntimeError,
        match=rf"gscnn_ops.{op}: the tensors are on CUDA but "
        r"gscnn_ops was built without its CUDA kernels.*"
        r"FORCE_CUDA=1 pip install",
    ):
        calls[op]()
