#!/usr/bin/env python
"""Markdown tables from a pytest-benchmark JSON of the gscnn_ops benchmarks.

    python -m pytest benchmarks/ --benchmark-only --benchmark-json=out.json
    python benchmarks/summarize.py out.json [--impls fused,eager,compiled]

Prints an overview (one row per group: median of each implementation, speedup of the fused op
over eager and over compiled, peak memory), then one table per group with every implementation's
median, IQR, rounds, peak memory and (CUDA forward) the fraction of the bandwidth roofline.
Speedup = median(other) / median(fused): above 1 means the fused op is faster.
Only ratios within one run are meaningful on a shared machine.
"""

import argparse
import json
import signal
import sys
from collections import OrderedDict

DEFAULT_IMPLS = ("fused", "eager", "compiled")
# Other processes using more than this many cores (average over a benchmark's timed rounds)
# mark its group as measured under contention.
BUSY_CORES = 0.2


def _impl_of(bench):
    info = bench.get("extra_info") or {}
    if "impl" in info:
        return info["impl"]
    # Fall back to the last "-" field of the parametrize id: "...-C32-fused]".
    name = bench.get("param") or bench.get("name", "")
    return name.rstrip("]").rsplit("-", 1)[-1]


def _fmt_time(seconds):
    if seconds is None:
        return "—"
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _fmt_mem(nbytes):
    if nbytes is None:
        return "n/a"
    return f"{nbytes / 2**20:.1f} MiB"


def _fmt_ratio(num, den):
    if num is None or den is None or den == 0:
        return "—"
    return f"{num / den:.2f}x"


def _group_sort_key(name):
    # "cpu-fwd-C32-f32": device, direction, C descending, dtype.
    parts = name.split("-")
    try:
        device, direction, c, dtype = parts[0], parts[1], int(parts[2].lstrip("C")), parts[3]
        return (device, dtype, direction != "fwd", -c, name)
    except (IndexError, ValueError):
        return ("~", "", False, 0, name)


def load_groups(path):
    with open(path) as f:
        data = json.load(f)
    groups = {}
    for bench in data.get("benchmarks", []):
        groups.setdefault(bench.get("group") or "(no group)", {})[_impl_of(bench)] = bench
    ordered = OrderedDict((g, groups[g]) for g in sorted(groups, key=_group_sort_key))
    return data, ordered


def _median(bench):
    return bench["stats"]["median"] if bench else None


def _info(bench, key):
    return (bench.get("extra_info") or {}).get(key) if bench else None


def render(data, groups, impls):
    lines = []
    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    lines.append(
        f"Machine: {machine.get('node', '?')}, {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"Python {machine.get('python_version', '?')}; "
        f"commit {str(commit.get('id', '?'))[:10]}{' (dirty)' if commit.get('dirty') else ''}; "
        f"{data.get('datetime', '')}"
    )
    others = [
        (_info(b, "others_cpu_cores"), g)
        for g, benches in groups.items()
        for b in benches.values()
        if _info(b, "others_cpu_cores") is not None
    ]
    threads = sorted(
        {
            _info(b, "torch_threads")
            for benches in groups.values()
            for b in benches.values()
            if _info(b, "torch_threads") is not None
        }
    )
    if threads:
        lines.append(f"torch CPU threads: {', '.join(map(str, threads))}.")
    if others:
        worst = max(others)
        lines.append(
            f"CPU used by other processes while timing: up to {worst[0]:.2f} cores "
            f"(group {worst[1]})."
        )
        if worst[0] > BUSY_CORES:
            lines.append(
                f"WARNING: groups marked * were timed while other processes used more "
                f"than {BUSY_CORES} of a core on average; their times and ratios are "
                "unreliable (re-run on a quiet machine)."
            )
    lines.append("")
    lines.append(f"Speedup = median(other) / median({impls[0]}); > 1 means {impls[0]} is faster.")
    lines.append("")

    base = impls[0]  # the fused op, which the speedups are relative to

    # Overview: one row per group.
    others = impls[1:]
    head = (
        ["group"]
        + [f"{i} median" for i in impls]
        + [f"{base} vs {o}" for o in others]
        + [f"{i} peak mem" for i in impls]
    )
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for group, benches in groups.items():
        fused = _median(benches.get(base))
        busy = [
            o
            for b in benches.values()
            for o in [_info(b, "others_cpu_cores")]
            if o is not None and o > BUSY_CORES
        ]
        row = [group + (" *" if busy else "")]
        row += [_fmt_time(_median(benches.get(i))) for i in impls]
        row += [_fmt_ratio(_median(benches.get(o)), fused) for o in others]
        row += [
            _fmt_mem(_info(benches.get(i), "peak_mem_bytes")) if benches.get(i) else "—"
            for i in impls
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    # One table per group.
    for group, benches in groups.items():
        fused = _median(benches.get(base))
        cuda_fwd = any(_info(b, "bw_floor_s") is not None for b in benches.values())
        lines.append(f"### {group}")
        lines.append("")
        head = ["impl", "median", "IQR", "rounds", f"time / {base}", "peak mem"]
        faults = any(_info(b, "minflt_per_call") is not None for b in benches.values())
        if faults:
            head += ["page faults / call"]
        if cuda_fwd:
            head += ["roofline fraction"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        names = [i for i in impls if i in benches] + sorted(set(benches) - set(impls))
        for impl in names:
            b = benches[impl]
            st = b["stats"]
            row = [
                impl,
                _fmt_time(st["median"]),
                _fmt_time(st.get("iqr")),
                str(st.get("rounds", "?")),
                _fmt_ratio(st["median"], fused),
                _fmt_mem(_info(b, "peak_mem_bytes")),
            ]
            if faults:
                pf = _info(b, "minflt_per_call")
                row.append("—" if pf is None else f"{pf:.0f}")
            if cuda_fwd:
                frac = _info(b, "roofline_fraction")
                row.append("—" if frac is None else f"{frac:.2f}")
            lines.append("| " + " | ".join(row) + " |")
        if cuda_fwd:
            floor = next(
                (
                    _info(b, "bw_floor_s")
                    for b in benches.values()
                    if _info(b, "bw_floor_s") is not None
                ),
                None,
            )
            lines.append("")
            lines.append(
                f"Bandwidth floor (s, r read + out, alpha written once): {_fmt_time(floor)}"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("json", help="file written by pytest --benchmark-json")
    p.add_argument(
        "--impls",
        default=",".join(DEFAULT_IMPLS),
        help="implementations to show, in order; speedups are relative to the first",
    )
    args = p.parse_args(argv)
    data, groups = load_groups(args.json)
    if not groups:
        print(
            f"{args.json}: no benchmarks in this file (run with --benchmark-only, not "
            "--benchmark-disable)",
            file=sys.stderr,
        )
        return 1
    print(render(data, groups, [i for i in args.impls.split(",") if i]))
    return 0


if __name__ == "__main__":
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet exit when piped into head
    sys.exit(main())
