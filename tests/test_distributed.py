"""Multi-process pieces of training: the CPU synchronised BatchNorm (two gloo processes against
one BatchNorm over the whole batch) and a two-process `torchrun` training run."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gscnn_ops.engine.checkpoint import load_model
from gscnn_ops.engine.distributed import AllReduceBatchNorm2d, convert_sync_batchnorm, state_digest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_worker(rank, world, port, x, grad_out, state, queue):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        bn = AllReduceBatchNorm2d(x.shape[1])
        bn.load_state_dict(state)
        part = x.chunk(world)[rank].clone().requires_grad_()
        y = bn(part)
        y.backward(grad_out.chunk(world)[rank])
        # Plain nested lists, not tensors: a tensor put on a multiprocessing queue travels as a
        # handle to shared memory that dies with this process, and the parent may read it too
        # late (seen on a busy machine: FileNotFoundError in the resource sharer).
        queue.put(
            (
                rank,
                *(
                    t.detach().tolist()
                    for t in (
                        y,
                        part.grad,
                        bn.weight.grad,
                        bn.bias.grad,
                        bn.running_mean,
                        bn.running_var,
                    )
                ),
            )
        )
    finally:
        dist.destroy_process_group()


def test_all_reduce_batchnorm_equals_batchnorm_over_the_global_batch():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 7) * 2 + 1
    grad_out = torch.randn(4, 3, 5, 7)
    ref = nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    xr = x.clone().requires_grad_()
    y_ref = ref(xr)
    y_ref.backward(grad_out)

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_bn_worker, args=(r, 2, port, x, grad_out, state, queue))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    results = {
        r[0]: [torch.tensor(v) for v in r[1:]] for r in (queue.get(timeout=120) for _ in procs)
    }
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    y = torch.cat([results[r][0] for r in range(2)])
    gx = torch.cat([results[r][1] for r in range(2)])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    # Each process's input gradient includes what flows back through the other's statistics.
    torch.testing.assert_close(gx, xr.grad, rtol=1e-5, atol=1e-5)
    for r in range(2):  # parameter gradients: each process holds its share; DDP sums/averages
        _, _, gw, gb, rm, rv = results[r]
        torch.testing.assert_close(rm, ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rv, ref.running_var, rtol=1e-5, atol=1e-6)
    gw = results[0][2] + results[1][2]
    gb = results[0][3] + results[1][3]
    torch.testing.assert_close(gw, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, ref.bias.grad, rtol=1e-5, atol=1e-5)


def test_convert_keeps_parameters_and_modes():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    with torch.no_grad():
        m[1].running_mean.fill_(0.5)
    m.eval()
    c = convert_sync_batchnorm(m, torch.device("cpu"))
    assert isinstance(c[1], AllReduceBatchNorm2d) and isinstance(c[2][0], AllReduceBatchNorm2d)
    assert not c[1].training
    assert state_digest(c) == state_digest(m)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(c(x), m(x))  # no process group: plain BatchNorm behaviour


@pytest.mark.slow
def test_two_process_torchrun_gives_the_same_weights_on_both_ranks(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "gscnn_ops",
        "train",
        "--backbone",
        "resnet18",
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--accumulate",
        "2",
        "--synthetic-length",
        "8",
        "--synthetic-size",
        "64",
        "96",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--log-every",
        "1",
        "--no-progress",
        "--no-tensorboard",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    start, end = records[0], records[-1]
    assert start["world_size"] == 2 and end["world_size"] == 2
    digests = end["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # The checkpoint holds those weights (BatchNorm statistics included).
    model, _ = load_model(str(out / "model.pt"))
    assert state_digest(model) == digests[0]
    assert [r["step"] for r in records if "loss_total" in r] == [1, 2, 3]
