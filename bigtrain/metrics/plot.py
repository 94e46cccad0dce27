"""Curves from stats.jsonl: one PNG with a line per run (``bigtrain plot``)."""
from __future__ import annotations

import json
import os


def read_series(run_dir: str, key: str) -> list[tuple[float, float]]:
    """(kimg, value) of every stats.jsonl row that has ``key``, in training order. A resumed run
    appends rows after the checkpoint it restarted from; rows an earlier attempt logged past that
    point are dropped, as TensorBoard's purge_step drops them."""
    path = os.path.join(run_dir, "stats.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a bigtrain run directory?")
    series: list[tuple[float, float]] = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if key in row and "kimg" in row:
                kimg = float(row["kimg"])
                series = [p for p in series if p[0] < kimg]  # a restart from an earlier checkpoint
                series.append((kimg, float(row[key])))
    return series


def metric_keys(run_dir: str) -> list[str]:
    keys: dict[str, None] = {}
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        for line in f:
            try:
                keys.update((k, None) for k in json.loads(line) if k.startswith("Metrics/"))
            except json.JSONDecodeError:
                pass
    return list(keys)


def plot_runs(runs: list[str], key: str | None, out: str, labels: list[str] | None = None, title: str | None = None,
              logy: bool = False) -> dict[str, list[tuple[float, float]]]:
    """Plot ``key`` (default: the first Metrics/fid* key of the first run) against kimg for each
    run; -> the series drawn, by label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if key is None:
        found = metric_keys(runs[0]) if os.path.isfile(os.path.join(runs[0], "stats.jsonl")) else []
        key = next((k for k in found if k.startswith("Metrics/fid")), found[0] if found else None)
        if key is None:
            raise ValueError(f"{runs[0]}/stats.jsonl has no Metrics/ values: train with `metrics: [fid10k]` "
                             f"(docs/metrics.md) or name a --key")
    labels = labels or [os.path.basename(os.path.normpath(r)) for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"--label given {len(labels)} time(s) for {len(runs)} run(s)")
    drawn = {}
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for run, label in zip(runs, labels):
        series = read_series(run, key)
        if not series:
            raise ValueError(f"{run}/stats.jsonl has no {key!r} values; it has: "
                             f"{', '.join(metric_keys(run)) or 'no Metrics/ keys'}")
        ax.plot([p[0] for p in series], [p[1] for p in series], marker="o", markersize=3, label=label)
        drawn[label] = series
    ax.set_xlabel("kimg (thousands of real images shown to D)")
    ax.set_ylabel(key)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or f"{key} over training")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return drawn
