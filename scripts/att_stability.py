"""How stable is regulariser 2 (paper eq. 6) early in training? Measures its value under tiny
input changes and across seeds, for both of GSCNNLoss's normalisations.

For each seed: a GSCNN at initialisation and after ``--steps`` training steps (``gscnn train``'s
own loop on the synthetic scenes); a batch of validation scenes, and ``--perturbations`` copies
of it with every pixel moved by -1, 0 or +1 grey level (Canny recomputed, as the data pipeline
does). Reported per (seed, stage): the number of pixels regulariser 2 selects (edge probability
> 0.8) and the term's mean, standard deviation and range over the perturbed copies, with
``att_norm="selected"`` (the release's: divided by the selected pixels) and ``"valid"``
(divided by all labelled pixels). A stable loss moves little when the input moves by one grey
level.

    python scripts/att_stability.py --seeds 0 1 2 3 4 --steps 20 --out att_stability.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch


def perturbed_batches(images, labels, count: int, seed: int):
    """The batch itself, then ``count`` copies with each pixel moved by -1/0/+1 grey level."""
    from gscnn_ops.data.prepare import collate, prepare

    g = torch.Generator().manual_seed(seed)
    for k in range(count + 1):
        batch = []
        for image, label in zip(images, labels):
            if k:
                step = torch.randint(-1, 2, image.shape, generator=g)
                image = (image.int() + step).clamp(0, 255).to(torch.uint8)
            batch.append(prepare(image, label))
        yield collate(batch)


@torch.no_grad()
def att_values(model, batches, loss_selected, loss_valid):
    """(selected pixel count, att with "selected", att with "valid") per batch."""
    rows = []
    for batch in batches:
        out = model(batch["image"], batch["canny"])
        label = batch["label"]
        selected = (torch.sigmoid(out.edge.squeeze(1)) > loss_selected.att_threshold) & (
            label != loss_selected.ignore_index
        )
        rows.append(
            (
                int(selected.sum()),
                float(loss_selected._att(out.seg, out.edge, label)),
                float(loss_valid._att(out.seg, out.edge, label)),
            )
        )
    return rows


def spread(values):
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def main(argv=None) -> int:
    from gscnn_ops.data import build_dataset
    from gscnn_ops.engine.checkpoint import load_model
    from gscnn_ops.engine.train import TrainConfig, train
    from gscnn_ops.models import GSCNN, GSCNNLoss

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=20, help="training steps of the later stage")
    p.add_argument("--perturbations", type=int, default=8)
    p.add_argument("--images", type=int, default=4, help="validation scenes in the batch")
    p.add_argument("--size", type=int, nargs=2, default=(96, 192))
    p.add_argument("--out", help="write the measurements as JSON here")
    args = p.parse_args(argv)

    val = build_dataset("synthetic", split="val", length=args.images, height=args.size[0],
                        width=args.size[1])  # fmt: skip
    images, labels = zip(*(val[i] for i in range(len(val))))
    loss_selected, loss_valid = GSCNNLoss(att_norm="selected"), GSCNNLoss(att_norm="valid")
    model_options = dict(backbone="resnet18", output_stride=16, shape_stride=2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            torch.manual_seed(seed)
            stages = {"init": GSCNN(val.num_classes, **model_options)}
            cfg = TrainConfig(synthetic_size=tuple(args.size), steps=args.steps, batch_size=4,
                              seed=seed, out=os.path.join(tmp, str(seed)), progress=False,
                              tensorboard=False, checkpoint_every=args.steps,
                              log_every=args.steps, device="cpu", **model_options)  # fmt: skip
            train(cfg)
            stages[f"step {args.steps}"] = load_model(os.path.join(cfg.out, "model.pt"))[0]
            for stage, model in stages.items():
                model.train()  # as the loss sees it: batch statistics
                values = att_values(
                    model,
                    perturbed_batches(images, labels, args.perturbations, seed),
                    loss_selected,
                    loss_valid,
                )
                count, sel, valid = zip(*values)
                row = {
                    "seed": seed,
                    "stage": stage,
                    "selected_pixels": spread(count),
                    "att_selected": spread(sel),
                    "att_valid": spread(valid),
                    "zero_fraction_selected": sum(v == 0 for v in sel) / len(sel),
                }
                rows.append(row)
                print(
                    f"seed {seed} {stage:>8}: selected px {row['selected_pixels']['mean']:8.1f} "
                    f"(range {row['selected_pixels']['min']}-{row['selected_pixels']['max']}); "
                    f"att/selected {row['att_selected']['mean']:.3f} ± "
                    f"{row['att_selected']['std']:.3f} [{row['att_selected']['min']:.3f}, "
                    f"{row['att_selected']['max']:.3f}]; att/valid "
                    f"{row['att_valid']['mean']:.5f} ± {row['att_valid']['std']:.5f}",
                    flush=True,
                )
    for stage in dict.fromkeys(r["stage"] for r in rows):
        sub = [r for r in rows if r["stage"] == stage]
        for norm in ("att_selected", "att_valid"):
            within = statistics.fmean(r[norm]["std"] / max(r[norm]["mean"], 1e-12) for r in sub)
            across = spread([r[norm]["mean"] for r in sub])
            print(
                f"{stage:>8} {norm:>12}: std over one-grey-level perturbations / mean "
                f"{within:.3f} (mean over seeds); across seeds mean {across['mean']:.4f}, "
                f"std/mean {across['std'] / max(across['mean'], 1e-12):.3f}"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
