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
    monkeypatch.setattr(_extension, "build_info",
                        lambda: {"torch_version": torch.__version__, "with_cuda": False})
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
