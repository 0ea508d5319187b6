"""`gscnn train`: the loss goes down, resumption is exact (in process and after a real kill),
checkpoints and logs are what they claim, and bad settings get clear errors."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gscnn_ops.engine.checkpoint import CheckpointError, load_checkpoint, load_model
from gscnn_ops.engine.distributed import state_digest
from gscnn_ops.engine.train import TrainConfig, train

TINY = dict(
    backbone="resnet18",
    batch_size=2,
    synthetic_length=6,
    synthetic_size=(48, 80),
    workers=0,
    log_every=1,
    checkpoint_every=100,
    tensorboard=False,
    progress=False,
)


def _log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_training_lowers_the_loss(tmp_path):
    cfg = TrainConfig(
        out=str(tmp_path), steps=12, augment=False, lr=0.02, **dict(TINY, synthetic_length=4)
    )
    summary = train(cfg)
    assert summary["finished"] and summary["step"] == 12
    losses = [r["loss_total"] for r in _log(tmp_path) if "loss_total" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    # Every term is logged, finite, and the learning rate decays polynomially to 0.
    rec = [r for r in _log(tmp_path) if "loss_total" in r]
    assert all(
        all(torch.isfinite(torch.tensor(r[f"loss_{k}"])) for k in ("seg", "edge", "dual", "att"))
        for r in rec
    )
    lrs = [r["lr"] for r in rec]
    assert lrs[0] == pytest.approx(0.02) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.02 * (1 / 12) ** 0.9)


def test_resume_is_exact_in_process(tmp_path):
    """Accumulation over epoch boundaries, augmentations and worker processes included."""
    kw = dict(TINY, steps=5, accumulate=2, workers=2, eval_every=2, synthetic_val_length=2)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **kw))
    first = train(TrainConfig(out=str(tmp_path / "b"), **kw), stop_after=2)
    assert first["step"] == 2 and not first["finished"]
    assert load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["train_state"]["step"] == 2
    assert not (tmp_path / "b" / "model.pt").exists()
    # Resumed with another number of data-loader workers (allowed: augmentations are seeded by
    # sample, not by worker), to the same weights.
    resumed = train(
        TrainConfig(
            out=str(tmp_path / "b"),
            resume=str(tmp_path / "b" / "checkpoint.pt"),
            **dict(kw, workers=0),
        )
    )
    assert resumed["finished"]
    assert resumed["rank_digests"] == straight["rank_digests"]
    # The log of the resumed run continues where the first stopped.
    steps = [r["step"] for r in _log(tmp_path / "b") if "loss_total" in r]
    assert steps == [1, 2, 3, 4, 5]
    # Evaluation during training (which must not disturb the exact resumption above).
    evals = [r for r in _log(tmp_path / "a") if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 5]
    assert all(0 <= r["miou"] <= 1 and len(r["boundary_f"]) == 4 for r in evals)


def test_resuming_a_finished_run_writes_its_missing_weights(tmp_path):
    """Stopped between the final checkpoint.pt and model.pt: resuming trains no further step and
    writes model.pt with the final weights."""
    done = train(TrainConfig(out=str(tmp_path), steps=2, **TINY))
    os.remove(tmp_path / "model.pt")
    again = train(
        TrainConfig(out=str(tmp_path), steps=2, resume=str(tmp_path / "checkpoint.pt"), **TINY)
    )
    assert again["step"] == 2 and again["rank_digests"] == done["rank_digests"]
    model, _ = load_model(str(tmp_path / "model.pt"))
    assert state_digest(model) == done["rank_digests"][0]
    assert [r["step"] for r in _log(tmp_path) if "loss_total" in r] == [1, 2]


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    steps = 12  # far more than the run can do between two looks at its checkpoint
    args = [
        "--backbone",
        "resnet18",
        "--steps",
        str(steps),
        "--batch-size",
        "2",
        "--synthetic-length",
        "6",
        "--synthetic-size",
        "48",
        "80",
        "--workers",
        "0",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--no-tensorboard",
        "--deterministic",
        "--device",
        "cpu",
    ]
    cli = [sys.executable, "-m", "gscnn_ops", "train"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = tmp_path / "straight"
    subprocess.run(
        cli + args + ["--out", str(straight)], env=env, check=True, timeout=300, capture_output=True
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cli + args + ["--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and load_checkpoint(str(ckpt))["train_state"]["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stopped_at = load_checkpoint(str(ckpt))["train_state"]["step"]
    assert 2 <= stopped_at < steps
    subprocess.run(
        cli + args + ["--out", str(killed), "--resume", str(ckpt)],
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    # The second process resumed where the first was killed (the log is appended to) and went on
    # to the end.
    events = [r for r in _log(killed) if "event" in r]
    assert [(e["event"], e["step"]) for e in events][:2] == [("start", 0), ("resume", stopped_at)]
    assert max(r["step"] for r in _log(killed) if "loss_total" in r) == steps
    a, _ = load_model(str(straight / "model.pt"))
    b, _ = load_model(str(killed / "model.pt"))
    assert state_digest(a) == state_digest(b)


def test_checkpoints_rebuild_the_model(tmp_path):
    train(TrainConfig(out=str(tmp_path), steps=1, augment=False, **dict(TINY, shape_stream=False)))
    model, meta = load_model(str(tmp_path / "model.pt"))
    assert model.shape is None and meta["model_config"]["backbone"] == "resnet18"
    assert len(meta["classes"]) == 19 and meta["classes"][0] == "road"
    assert "train_state" not in torch.load(tmp_path / "model.pt", weights_only=True)
    # No stray temporary files from the atomic writes.
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "log.jsonl", "model.pt"]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, amp, monkeypatch):
    from gscnn_ops.models import GSCNN

    # What the model's forward runs under, and whether the loss scaler is on.
    seen = []
    forward = GSCNN.forward

    def spy(self, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GSCNN, "forward", spy)
    scalers = []
    scaler_init = torch.amp.GradScaler.__init__

    def record_scaler(self, *args, **kwargs):
        scaler_init(self, *args, **kwargs)
        scalers.append(self.is_enabled())

    monkeypatch.setattr(torch.amp.GradScaler, "__init__", record_scaler)
    runs = {}
    for mode in ("none", amp):
        seen.clear()
        out = tmp_path / mode
        summary = train(TrainConfig(out=str(out), steps=2, amp=mode, augment=False, **TINY))
        assert summary["finished"]
        runs[mode] = [r["loss_total"] for r in _log(out) if "loss_total" in r]
        assert all(math.isfinite(v) for v in runs[mode]), runs[mode]
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        assert seen and all(on == (dtype is not None) for on, _ in seen)
        assert dtype is None or all(d == dtype for _, d in seen)
    assert scalers == [False, amp == "fp16"]
    # The first step's loss is computed at the same initial weights: mixed precision changes it
    # by rounding only (bf16 keeps 8 bits of mantissa, fp16 11).
    torch.testing.assert_close(runs[amp][0], runs["none"][0], rtol=5e-2, atol=0)


def test_resume_refuses_other_settings_and_weights_only_files(tmp_path):
    train(TrainConfig(out=str(tmp_path), steps=2, augment=False, **TINY), stop_after=1)
    ckpt = str(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"resume .*lr: checkpoint 0.01 vs now 0.5"):
        train(
            TrainConfig(
                out=str(tmp_path), steps=2, augment=False, resume=ckpt, **dict(TINY, lr=0.5)
            )
        )
    train(TrainConfig(out=str(tmp_path), steps=2, augment=False, resume=ckpt, **TINY))
    with pytest.raises(ValueError, match="weights only"):
        train(
            TrainConfig(
                out=str(tmp_path), steps=3, augment=False, resume=str(tmp_path / "model.pt"), **TINY
            )
        )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        train(TrainConfig(out=str(tmp_path), steps=2, resume=str(bad), **TINY))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        train(TrainConfig(out=str(tmp_path), steps=2, resume=str(tmp_path / "missing.pt"), **TINY))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(steps=0), "--steps must be at least 1"),
        (dict(batch_size=0), "--batch-size must be at least 1"),
        (dict(lr=-1.0), "--lr must be positive"),
        (dict(amp="fp8"), "--amp must be one of"),
        (dict(output_stride=32), "--output-stride must be 8 or 16"),
        (dict(scale_range=(2.0, 0.5)), "--scale-range"),
        (dict(batch_size=7), "fewer than one batch"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(out=str(tmp_path), **dict(dict(TINY, steps=1), **change)))


def test_tensorboard_gets_the_scalars_when_installed(tmp_path, monkeypatch):
    """With a stand-in for torch.utils.tensorboard (the package is optional)."""
    import sys
    import types

    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer)
    )
    train(TrainConfig(out=str(tmp_path), steps=2, augment=False, **dict(TINY, tensorboard=True)))
    assert calls[0] == ("init", str(tmp_path / "tensorboard")) and calls[-1] == ("close",)
    logged = {(c[0], c[2]) for c in calls[1:-1]}
    assert {("loss_total", 1), ("loss_dual", 2), ("lr", 2)} <= logged


def test_a_diverging_run_stops_with_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match=r"not finite in steps 1\.\.3 .*lower --lr"):
        train(
            TrainConfig(
                out=str(tmp_path), steps=6, lr=1e12, augment=False, **dict(TINY, log_every=3)
            )
        )
