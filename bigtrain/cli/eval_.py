"""`bigtrain eval`: FID, KID, precision/recall and MS-SSIM of a generator against real data."""
from __future__ import annotations

import json
import os


def run(args) -> int:
    import dataclasses

    from bigtrain.data import open_data
    from bigtrain.data.shards import names_command_or_url
    from bigtrain.distributed import DistEnv, print0
    from bigtrain.distributed.strategy import build_collectives
    from bigtrain.export.load import load_generator_from_checkpoint
    from bigtrain.models.sampling import standing_stats
    from bigtrain.metrics import InceptionFeatures, evaluate, parse_metrics

    specs = parse_metrics(args.metrics)
    env = DistEnv.from_environ()
    strategy = None
    if env.world_size > 1:
        strategy = build_collectives(args.device, env)  # eval trains nothing: collectives only
        strategy.setup()
    try:
        G, info = load_generator_from_checkpoint(args.checkpoint, args.device)
        if args.standing_stats:
            standing_stats(G, args.standing_stats, args.batch, args.device)
        data_cfg = info["config"].data
        if args.data:
            data_cfg = dataclasses.replace(data_cfg, source=args.data, manifest=None)
        elif names_command_or_url(data_cfg.source):
            # The checkpoint may come from anyone: a command or URL stored in it is never run or fetched.
            raise ValueError(f"{info['checkpoint']} names its training data {data_cfg.source!r}, a command or URL; "
                             f"bigtrain does not run or fetch what a checkpoint names (docs/security.md): give the "
                             f"real images with --data")
        else:
            # Nor is a path it names read: the user names the real images (the stored one is shown to copy).
            raise ValueError(f"give the real images with --data: {info['checkpoint']} was trained on "
                             f"--data {data_cfg.source!r}, and bigtrain does not open what a checkpoint names "
                             f"(docs/security.md)")
        data = open_data(data_cfg, seed=0, printer=print0)
        net = InceptionFeatures(args.inception, args.device) if any(s.uses_inception for s in specs) else None
        cache = None if args.no_cache else args.cache
        result = evaluate(G, data, specs, net, strategy, args.batch, args.device, cache, args.trunc, printer=print0)
    finally:
        if strategy:
            strategy.teardown()
    result.update(checkpoint=info["checkpoint"], data=data_cfg.source, inception=str(net.path) if net else None, trunc=args.trunc,
                  world_size=env.world_size)
    print0(format_metrics(result))
    if env.is_main:
        out = args.json or os.path.splitext(info["checkpoint"])[0] + ".metrics.json"
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
        print0(f"wrote {out}")
    return 0


def format_metrics(r: dict) -> str:
    lines = [f"{'metric':<22} {'value':>12}"]
    lines += [f"{k:<22} {v:>12.4f}" for k, v in r["metrics"].items()]
    s = r["seconds"]
    if r["generated"]:
        lines.append(f"{r['generated']} generated vs {r['real']} real images ({r['real_features']} real features); "
                     f"{s['total']:.0f} s: real {s['real']:.0f}, generated {s['generated']:.0f}, "
                     f"math {s['metrics']:.0f}")
    else:
        lines.append(f"{s['total']:.0f} s")
    return "\n".join(lines)


def add(sub) -> None:
    e = sub.add_parser("eval", help="FID / KID / precision-recall of a checkpoint's G_ema against real data")
    e.add_argument("checkpoint", help="training checkpoint (ckpt-*.pt) or run directory")
    e.add_argument("--metrics", default="fid10k", help="comma-separated: fidN, kidN, prN (N images, e.g. fid10k, kid1k), msssimN (N pairs)")
    e.add_argument("--data", help="real data (data.source syntax), required: a path, command or URL stored in "
                                  "the checkpoint is never opened (the error shows the one it was trained on)")
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--device", default="cpu")
    e.add_argument("--trunc", type=float, default=None, help="truncation, as for generate (default none)")
    e.add_argument("--standing-stats", type=int, default=0, metavar="N", help="BigGAN: re-estimate BN statistics first")
    e.add_argument("--inception", help="TorchScript InceptionV3 weights (default: searched, see docs/metrics.md)")
    e.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "bigtrain", "fid-stats"),
                   help="folder for real-data features (default ~/.cache/bigtrain/fid-stats)")
    e.add_argument("--no-cache", action="store_true", help="always compute the real features")
    e.add_argument("--json", help="where to write the results (default: beside the checkpoint, .metrics.json)")
    e.set_defaults(fn=run)
