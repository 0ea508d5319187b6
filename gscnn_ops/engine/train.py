"""Training GSCNN: SGD with polynomial decay on the joint loss, AMP, gradient accumulation,
JSON-lines (and TensorBoard) logging, atomic checkpoints and exact resumption, on one process or
many (``torchrun``, see :mod:`.distributed`).

Exact resumption. Training consumes one flat stream of micro-batches: micro-batch ``m`` belongs
to epoch ``m // B`` (``B`` micro-batches per epoch and process) and is the ``m % B``-th batch of
that epoch's permutation (``DistributedSampler``, seeded by (seed, epoch)); its augmentations are
seeded by (seed, epoch, sample index) (:class:`~gscnn_ops.data.SegmentationSamples`). An
optimiser step takes ``accumulate`` consecutive micro-batches, so a checkpoint, written between
steps, needs only the step number, the optimiser, scheduler and loss-scaler states and every
process's RNG state (the Gumbel noise of the dual-task loss). Resuming rebuilds the same stream
from that point, so on the CPU with deterministic settings a run that was killed and resumed ends
with bitwise the same weights as one that ran straight through.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..data import SegmentationSamples, build_dataset
from ..data.prepare import collate
from ..models import GSCNN, GSCNNLoss
from ..models.loss import ATT_NORMS
from ..ops import check_errors
from . import _cli
from .checkpoint import load_checkpoint, load_model, make_payload, model_config, save_checkpoint
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    convert_sync_batchnorm,
    init_distributed,
    shutdown,
    state_digest,
)
from .evaluate import evaluate
from .inference import AMP_DTYPES

LOSS_TERMS = ("total", "seg", "edge", "dual", "att")

# Settings that may differ between a run and its resumption without changing the result.
RESUME_MAY_CHANGE = (
    "out",
    "workers",
    "device",
    "progress",
    "checkpoint_every",
    "log_every",
    "resume",
    "tensorboard",
    "eval_every",
    "eval_split",
    "synthetic_val_length",
)


@dataclass
class TrainConfig:
    """The settings of a training run (``gscnn train`` has one option per field, ``--field-name``;
    ``gscnn train --help`` explains each).

    Examples:
        >>> from gscnn_ops.engine import TrainConfig
        >>> cfg = TrainConfig(backbone="resnet18", steps=100, batch_size=4)
        >>> cfg.validate()
        >>> cfg.lr, cfg.edge_weight, cfg.resolved_crop()
        (0.01, 20.0, (128, 256))
    """

    # data
    dataset: str = "synthetic"
    data_root: Optional[str] = None
    split: str = "train"
    classes_file: Optional[str] = None
    synthetic_length: int = 64
    synthetic_val_length: int = 16
    synthetic_size: Tuple[int, int] = (128, 256)
    augment: bool = True
    crop_size: Optional[Tuple[int, int]] = None  # None: 720x720, or the synthetic image size
    scale_range: Tuple[float, float] = (0.5, 2.0)
    workers: int = 2
    # model
    backbone: str = "resnet101"
    output_stride: int = 8
    shape_stream: bool = True
    shape_stride: int = 1
    head: str = "gscnn_ops"
    pretrained: Optional[str] = None
    init: Optional[str] = None  # weights to start from (fine-tuning)
    sync_bn: bool = True
    # optimisation
    steps: int = 1000
    batch_size: int = 2  # per process
    accumulate: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    amp: str = "none"
    # loss (paper's weights: edge BCE 20, CE 1, dual 1, regulariser-2 1)
    edge_weight: float = 20.0
    seg_weight: float = 1.0
    dual_weight: float = 1.0
    att_weight: float = 1.0
    att_norm: str = "valid"
    class_weighting: bool = False
    # running
    seed: int = 0
    deterministic: bool = False
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    out: str = "runs/gscnn"
    checkpoint_every: int = 500
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed
    resume: Optional[str] = None
    eval_every: int = 0  # 0: no evaluation during training
    eval_split: str = "val"

    def validate(self) -> None:
        def need(cond, msg):
            if not cond:
                raise ValueError(f"gscnn train: {msg}")

        for name in (
            "steps",
            "batch_size",
            "accumulate",
            "checkpoint_every",
            "log_every",
            "synthetic_length",
        ):
            need(
                getattr(self, name) >= 1,
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}",
            )
        need(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        need(self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}")
        need(self.lr > 0 and math.isfinite(self.lr), f"--lr must be positive, got {self.lr}")
        need(
            self.att_norm in ATT_NORMS,
            f"--att-norm must be one of {list(ATT_NORMS)}, got {self.att_norm!r}",
        )
        need(self.amp in AMP_DTYPES, f"--amp must be one of {list(AMP_DTYPES)}, got {self.amp!r}")
        need(
            self.output_stride in (8, 16),
            f"--output-stride must be 8 or 16, got {self.output_stride}",
        )
        lo, hi = self.scale_range
        need(0 < lo <= hi, f"--scale-range must be 0 < low <= high, got {self.scale_range}")
        if self.crop_size is not None:
            need(min(self.crop_size) >= 1, f"--crop-size must be positive, got {self.crop_size}")

    def resolved_crop(self) -> Tuple[int, int]:
        if self.crop_size is not None:
            return tuple(self.crop_size)
        return tuple(self.synthetic_size) if self.dataset == "synthetic" else (720, 720)

    def to_dict(self) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


class _SkipSampler(Sampler):
    """The indices of ``sampler`` after the first ``skip`` (resuming inside an epoch)."""

    def __init__(self, sampler: Sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it)
        yield from it

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


def _dataset(cfg: TrainConfig, split: str, augment: bool):
    options = {}
    if cfg.dataset == "synthetic":
        length = cfg.synthetic_length if split == cfg.split else cfg.synthetic_val_length
        options = dict(
            length=length, height=cfg.synthetic_size[0], width=cfg.synthetic_size[1], seed=cfg.seed
        )
    elif cfg.dataset == "folder" and cfg.classes_file:
        options = dict(classes_file=cfg.classes_file)
    base = build_dataset(cfg.dataset, cfg.data_root, split, **options)
    transform = None
    if augment:
        from ..data.transforms import TrainTransform

        transform = TrainTransform(
            cfg.resolved_crop(), scale_range=tuple(cfg.scale_range), ignore_index=base.ignore_index
        )
    return SegmentationSamples(base, transform, seed=cfg.seed)


def _model(cfg: TrainConfig, num_classes: int) -> GSCNN:
    model = GSCNN(
        num_classes,
        cfg.backbone,
        cfg.output_stride,
        shape_stream=cfg.shape_stream,
        shape_stride=cfg.shape_stride,
        pretrained=cfg.pretrained,
        head=cfg.head,
    )
    if cfg.init:
        start, meta = load_model(cfg.init)
        wanted = model_config(model, cfg.backbone, cfg.output_stride)
        differ = {k: (v, wanted[k]) for k, v in meta["model_config"].items() if wanted.get(k) != v}
        if differ:
            lines = ", ".join(
                f"{k}: checkpoint {a!r} vs --{k.replace('_', '-')} {b!r}"
                for k, (a, b) in differ.items()
            )
            raise ValueError(
                f"gscnn train --init {cfg.init}: its model differs from the one "
                f"asked for ({lines}); give the same model options"
            )
        model.load_state_dict(start.state_dict())
        model.load_report = None
    return model


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_resume_config(stored: dict, cfg: TrainConfig, path: str) -> None:
    current = cfg.to_dict()
    stored = {"head": "gscnn_ops", "att_norm": "selected", **stored}  # before these options
    diff = {
        k: (stored.get(k), current[k])
        for k in current
        if k not in RESUME_MAY_CHANGE and stored.get(k) != current[k]
    }
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"gscnn train --resume {path}: the settings differ from the run that "
            f"wrote the checkpoint ({lines}); resume with the same settings"
        )


class _Logger:
    """JSON-lines metrics (one object per line) and, when installed, TensorBoard; main process
    only. The JSON-lines file is appended to, so a resumed run continues the same log."""

    def __init__(self, out: str, enabled: bool, tensorboard: bool):
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        os.makedirs(out, exist_ok=True)
        self.path = os.path.join(out, "log.jsonl")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(out, "tensorboard"))
            except ImportError:  # tensorboard not installed: JSON lines only
                self.tb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(cfg: TrainConfig, stop_after: Optional[int] = None) -> dict:
    """Runs (or resumes) training; returns a summary dict. ``stop_after``: leave after that many
    optimiser steps of this call (as if killed right after a checkpoint), for tests."""
    cfg.validate()
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, info, stop_after)
    finally:
        shutdown(info)


def _train(cfg: TrainConfig, info: DistInfo, stop_after: Optional[int]) -> dict:
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed * 1000 + info.rank)  # Gumbel noise; different on every process
    payload = _resume_payload(cfg)
    run = _Run(cfg, info)
    if payload is not None:
        run.resume(payload)
    run.start(resumed=payload is not None)
    run.loop(stop_after)
    return run.finish()


def _resume_payload(cfg: TrainConfig) -> Optional[dict]:
    """The checkpoint to resume from (checked against ``cfg``), or None."""
    if not cfg.resume:
        return None
    payload = load_checkpoint(cfg.resume)
    if "train_state" not in payload:
        raise ValueError(
            f"gscnn train --resume {cfg.resume}: this checkpoint holds weights "
            f"only (no optimiser state); it cannot be resumed"
        )
    _check_resume_config(payload["train_state"]["config"], cfg, cfg.resume)
    return payload


class _Run:
    """One training run, in the order it happens: setup (``__init__``), ``resume``, ``start``
    (distributed wrapper, sampler, logger, evaluation data), ``loop`` over optimiser steps (each
    ``accumulate`` micro-batches: ``_micro_step``, then ``_optimizer_step``, ``_log``,
    ``checkpoint``, ``validate``), ``finish``."""

    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info, self.device = cfg, info, info.device
        self.data = _dataset(cfg, cfg.split, cfg.augment)
        self.model = _model(cfg, self.data.num_classes).to(self.device)
        if cfg.sync_bn and info.distributed:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.criterion = GSCNNLoss(
            edge_weight=cfg.edge_weight,
            seg_weight=cfg.seg_weight,
            dual_weight=cfg.dual_weight,
            att_weight=cfg.att_weight,
            att_norm=cfg.att_norm,
            ignore_index=self.data.ignore_index,
            class_weighting=cfg.class_weighting,
        )
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.PolynomialLR(
            self.optimizer, total_iters=cfg.steps, power=cfg.poly_power
        )
        self.amp_dtype = AMP_DTYPES[cfg.amp]
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype is torch.float16
        )
        self.step = 0

    # ------------------------------------------------------------------ resume
    def resume(self, payload: dict) -> None:
        state = payload["train_state"]
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        rngs, info = state["rng"], self.info
        if len(rngs) != info.world_size:
            warnings.warn(
                f"gscnn train: resuming {self.cfg.resume} (written by {len(rngs)} "
                f"processes) with {info.world_size}: the run goes on, but its data "
                f"order and noise differ from an uninterrupted run",
                stacklevel=3,
            )
        _set_rng_state(rngs[info.rank % len(rngs)], self.device)

    # ------------------------------------------------------------------ start
    def start(self, resumed: bool) -> None:
        cfg, info, data = self.cfg, self.info, self.data
        self.ddp = self.model
        if info.distributed:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.sampler = DistributedSampler(
            data,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.per_epoch = len(self.sampler) // cfg.batch_size
        if self.per_epoch == 0:
            raise ValueError(
                f"gscnn train: the dataset has {len(data)} samples, fewer than one "
                f"batch of {cfg.batch_size} per process x {info.world_size} processes"
            )
        self.logger = _Logger(cfg.out, info.is_main, cfg.tensorboard)
        if info.is_main:
            self.logger.log(
                {
                    "event": "resume" if resumed else "start",
                    "step": self.step,
                    "config": cfg.to_dict(),
                    "world_size": info.world_size,
                    "num_samples": len(data),
                    "batches_per_epoch": self.per_epoch,
                }
            )
        self.val_loader = None
        if cfg.eval_every and info.is_main:
            # Its own generator: iterating must not draw from the global RNG (exact resumption).
            self.val_loader = DataLoader(
                _dataset(cfg, cfg.eval_split, augment=False),
                batch_size=1,
                num_workers=cfg.workers,
                generator=torch.Generator(),
            )

    # ------------------------------------------------------------------ the loop
    def loop(self, stop_after: Optional[int]) -> None:
        cfg = self.cfg
        self.bar = _cli.progress_bar(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            unit="step",
            enabled=cfg.progress and self.info.is_main,
        )
        self.sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=self.device)
        self.since, self.t_log, steps_this_call = 0, time.perf_counter(), 0
        micro = self.step * cfg.accumulate
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step >= cfg.steps:
            # Resumed after the last step: the run was stopped between writing its final
            # checkpoint and model.pt; write them (again) and leave.
            self.checkpoint(final=True)
        while self.step < cfg.steps and (stop_after is None or steps_this_call < stop_after):
            epoch, offset = divmod(micro, self.per_epoch)
            for batch in self._epoch_loader(epoch, offset):
                last = (micro + 1) % cfg.accumulate == 0
                self._micro_step(batch, last)
                micro += 1
                if not last:
                    continue
                self._optimizer_step()
                steps_this_call += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(epoch)
                stop = self.step >= cfg.steps or (
                    stop_after is not None and steps_this_call >= stop_after
                )
                if self.step % cfg.checkpoint_every == 0 or stop:
                    self.checkpoint(final=self.step >= cfg.steps)
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step >= cfg.steps):
                    self.validate()
                if stop:
                    break
        self.bar.close()

    def _epoch_loader(self, epoch: int, offset: int) -> DataLoader:
        """The micro-batches of ``epoch`` from the ``offset``-th on."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        self.data.set_epoch(epoch)
        return DataLoader(
            self.data,
            batch_size=cfg.batch_size,
            sampler=_SkipSampler(self.sampler, offset * cfg.batch_size),
            num_workers=cfg.workers,
            drop_last=True,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            # Its own generator: making an iterator must not draw from the global
            # RNG, whose state the checkpoints carry (the Gumbel noise).
            generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch),
        )

    def _micro_step(self, batch: dict, last: bool) -> None:
        """Forward and backward of one micro-batch; the loss terms summed on the device (no host
        synchronisation between log steps)."""
        device = self.device
        image = batch["image"].to(device, non_blocking=True)
        edges = batch["canny"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        # Gradients are all-reduced once per optimiser step, on its last micro-batch.
        sync = (
            self.ddp.no_sync() if (self.info.distributed and not last) else contextlib.nullcontext()
        )
        with sync:
            with torch.autocast(
                device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                out = self.ddp(image, edges)
            terms = self.criterion(out, label)
            self.scaler.scale(terms["total"] / self.cfg.accumulate).backward()
        self.sums += torch.stack([terms[k].detach().double() for k in LOSS_TERMS])
        self.since += 1

    def _optimizer_step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr = self.scheduler.get_last_lr()[0]
        with warnings.catch_warnings():
            # fp16: the scaler skips the optimiser step on inf/NaN gradients while it
            # calibrates; the schedule counts iterations and advances anyway, on purpose.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.step += 1
        self.bar.update(1)

    def _log(self, epoch: int) -> None:
        """Mean loss terms since the last log (all processes), checked finite."""
        cfg, step, since = self.cfg, self.step, self.since
        mean = all_reduce_mean(self.sums / since, self.info).cpu()
        # The host waits for the device here anyway: report the bad labels that the CUDA
        # kernels recorded without stopping the stream (they made the loss NaN).
        check_errors()
        if not torch.isfinite(mean).all():
            first = step - since // cfg.accumulate + 1
            terms = {k: float(v) for k, v in zip(LOSS_TERMS, mean)}
            raise FloatingPointError(
                f"gscnn train: the loss is not finite in steps {first}..{step} (mean terms "
                f"{terms}); lower --lr, or use --amp bf16 instead of fp16"
            )
        elapsed = time.perf_counter() - self.t_log
        record = {
            "step": step,
            "epoch": epoch,
            "lr": self.lr,
            **{f"loss_{k}": float(v) for k, v in zip(LOSS_TERMS, mean)},
            "images_per_s": since * cfg.batch_size * self.info.world_size / elapsed,
        }
        self.logger.log(record)
        self.bar.set_postfix(loss=f"{record['loss_total']:.3f}", lr=f"{self.lr:.2e}")
        self.sums.zero_()
        self.since, self.t_log = 0, time.perf_counter()

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self, final: bool) -> None:
        """checkpoint.pt (resumable) on the main process; with ``final`` also model.pt (weights
        only, for eval and predict). Every process's RNG state goes in."""
        cfg, info, model, data = self.cfg, self.info, self.model, self.data
        rngs = all_gather_objects(_rng_state(self.device), info)
        if not info.is_main:
            return
        train_state = {
            "config": cfg.to_dict(),
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "world_size": info.world_size,
        }
        mcfg = model_config(model, cfg.backbone, cfg.output_stride)
        meta = (data.classes, data.palette, data.ignore_index)
        save_checkpoint(
            os.path.join(cfg.out, "checkpoint.pt"),
            make_payload(model, mcfg, *meta, train_state=train_state),
        )
        if final:
            save_checkpoint(os.path.join(cfg.out, "model.pt"), make_payload(model, mcfg, *meta))

    # ------------------------------------------------------------------ evaluation
    def validate(self) -> None:
        """Main process only, on the unwrapped model in eval mode (BatchNorm's running
        statistics: no collectives); the others wait."""
        cfg, step = self.cfg, self.step
        if self.val_loader is not None:
            r = evaluate(
                self.model,
                self.val_loader,
                self.data.num_classes,
                self.data.ignore_index,
                device=self.device,
                progress=False,
            )
            bf = r["boundary_f"]
            self.logger.log(
                {
                    "event": "eval",
                    "step": step,
                    "split": cfg.eval_split,
                    "miou": r["miou"],
                    "pixel_accuracy": r["pixel_accuracy"],
                    "thresholds": bf["thresholds"],
                    "boundary_f": bf["mean_f"],
                    "strict_boundary_f": bf["strict_mean_f"],
                }
            )
            self.bar.write(
                f"step {step}: {cfg.eval_split} mIoU {100 * r['miou']:.2f}, boundary "
                f"F {' / '.join(f'{100 * v:.1f}' for v in bf['mean_f'])} at "
                f"{'/'.join(f'{t:g}' for t in bf['thresholds'])} px"
            )
        if self.info.distributed:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ finish
    def finish(self) -> dict:
        """The summary; checks that every process ended with the same weights."""
        info = self.info
        digests = all_gather_objects(state_digest(self.model), info)
        summary = {
            "event": "end",
            "step": self.step,
            "finished": self.step >= self.cfg.steps,
            "world_size": info.world_size,
            "rank_digests": digests,
            "ranks_agree": len(set(digests)) == 1,
        }
        self.logger.log(summary)
        self.logger.close()
        if not summary["ranks_agree"]:
            raise RuntimeError(
                f"gscnn train: the processes ended with different weights "
                f"({digests}); this is a bug, please report it"
            )
        return summary


# Command line: one option per TrainConfig field (--field-name), with these help texts.
_HELP = {
    "dataset": "synthetic (embedded, no files), cityscapes or folder",
    "data_root": "folder of the cityscapes / folder dataset",
    "split": "dataset split to train on",
    "classes_file": "class list of the folder dataset (default ROOT/classes.txt)",
    "synthetic_length": "number of synthetic training scenes",
    "synthetic_size": "height and width of the synthetic scenes",
    "augment": "random scale, crop, flip, colour jitter and blur (as the release)",
    "crop_size": "training crop, height and width (default 720 720; the scene size for synthetic)",
    "scale_range": "random scale range",
    "workers": "data loader processes (Canny and augmentations run there)",
    "backbone": "resnet18, resnet34, resnet50, resnet101 or wrn38",
    "output_stride": "trunk output stride, 8 or 16",
    "shape_stream": "GSCNN (on) or the DeepLabV3+ baseline (--no-shape-stream)",
    "shape_stride": "shape-stream resolution, 1 (full, as the release) or 2",
    "head": "gscnn_ops (ours) or release (the authors' head: fine-tune their checkpoint "
    "with --init)",
    "init": "start from these weights (fine-tuning): a gscnn_ops checkpoint or one of the "
    "authors' release (with --backbone wrn38 --head release); not a resume",
    "pretrained": "ImageNet checkpoint of the trunk: torchvision's format for the ResNets, the "
    "release's wider_resnet38.pth.tar for wrn38 (nothing is downloaded)",
    "sync_bn": "synchronise batch-norm statistics across processes when there are several",
    "steps": "optimiser steps in all",
    "batch_size": "images per process and micro-batch",
    "accumulate": "micro-batches per optimiser step (gradient accumulation)",
    "lr": "initial learning rate (SGD)",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay",
    "poly_power": "exponent of the polynomial decay",
    "amp": "mixed precision: none, bf16 or fp16 (fp16 uses a gradient scaler)",
    "edge_weight": "weight of the edge BCE",
    "seg_weight": "weight of the segmentation CE",
    "dual_weight": "weight of the dual-task loss",
    "att_weight": "weight of regulariser 2",
    "att_norm": "regulariser 2 divided by the number of valid pixels (stable early in training; "
    "measured better, see gscnn ablate) or of selected pixels (the release)",
    "class_weighting": "the release's per-image class weights in the CE",
    "seed": "seed of the data order, augmentations, initialisation and noise",
    "deterministic": "torch.use_deterministic_algorithms (bitwise-reproducible on the CPU)",
    "device": "cpu, cuda or cuda:N",
    "out": "output folder: log.jsonl, checkpoint.pt (resumable), model.pt (final weights)",
    "checkpoint_every": "write checkpoint.pt every N steps (and at the end)",
    "log_every": "log the mean losses every N steps",
    "progress": "progress bar",
    "tensorboard": "also log to TensorBoard when it is installed",
    "resume": "checkpoint.pt of an interrupted run to continue exactly where it stopped",
    "eval_every": "evaluate on --eval-split every N steps and at the end (0: never)",
    "eval_split": "split evaluated during training",
    "synthetic_val_length": "number of synthetic scenes evaluated during training",
}


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train", help="train GSCNN (or the baseline)", description=__doc__.split("\n\n")[0]
    )
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        kind = type(default) if default is not None else str
        if f.name == "device":
            p.add_argument(flag, default=default, help=_HELP[f.name])
        elif f.name == "crop_size":
            p.add_argument(flag, type=int, nargs=2, metavar=("H", "W"), help=_HELP[f.name])
        elif isinstance(default, bool):
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=_HELP[f.name]
            )
        elif isinstance(default, tuple):
            p.add_argument(
                flag,
                type=type(default[0]),
                nargs=2,
                default=default,
                help=_HELP[f.name] + f" (default {default[0]} {default[1]})",
            )
        elif f.name == "dataset":
            p.add_argument(
                flag,
                choices=("synthetic", "cityscapes", "folder"),
                default=default,
                help=_HELP[f.name],
            )
        elif f.name == "att_norm":
            p.add_argument(flag, choices=ATT_NORMS, default=default, help=_HELP[f.name])
        elif f.name == "amp":
            p.add_argument(flag, choices=tuple(AMP_DTYPES), default=default, help=_HELP[f.name])
        else:
            p.add_argument(
                flag,
                type=kind,
                default=default,
                help=_HELP[f.name] + (f" (default {default})" if default is not None else ""),
            )
    p.set_defaults(fn=run)
    return p


def config_from_args(args) -> TrainConfig:
    values = {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return TrainConfig(**values)


def run(args) -> int:
    try:
        summary = train(config_from_args(args))
    except (*_cli.SETUP_ERRORS, FloatingPointError) as e:
        return _cli.fail("train", e)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"gscnn train: {summary['step']} steps done; weights in "
            f"{os.path.join(args.out, 'model.pt')}, resumable state in "
            f"{os.path.join(args.out, 'checkpoint.pt')}, log in "
            f"{os.path.join(args.out, 'log.jsonl')}"
        )
    return 0
