"""`bigtrain plot RUN...`: a logged value against kimg, as a PNG."""
from __future__ import annotations


def run(args) -> int:
    from bigtrain.metrics.plot import plot_runs

    drawn = plot_runs(args.runs, args.key, args.out, args.label, args.title, args.logy)
    for label, series in drawn.items():
        last = series[-1]
        best = min(series, key=lambda p: p[1])
        print(f"{label}: {len(series)} points, last {last[1]:.4g} at kimg {last[0]:g}, lowest {best[1]:.4g} "
              f"at kimg {best[0]:g}")
    print(f"wrote {args.out}")
    return 0


def add(sub) -> None:
    pl = sub.add_parser("plot", help="plot a logged value (default the FID) against kimg from runs' stats.jsonl")
    pl.add_argument("runs", nargs="+", help="run directories (one line each)")
    pl.add_argument("--key", help="the stats.jsonl key, e.g. Metrics/fid10k, Loss/G/main (default: the run's FID)")
    pl.add_argument("--out", required=True, help="PNG path")
    pl.add_argument("--label", action="append", help="legend label per run, in order (default: folder names)")
    pl.add_argument("--title")
    pl.add_argument("--logy", action="store_true", help="logarithmic y axis")
    pl.set_defaults(fn=run)
