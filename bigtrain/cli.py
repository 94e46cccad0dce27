"""`bigtrain train | submit | pack | generate | export | import | eval | plot | bench | kernels | config`: one entry point under python, torchrun,
srun or submitit."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _load_train_config(path: str, overrides: list[str]):
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    return load_config(path, overrides, TrainConfig)


def cmd_train(args) -> int:
    from bigtrain.train.run import train

    cfg = _load_train_config(args.config, args.overrides)
    source = args.config + (f" + overrides {' '.join(args.overrides)}" if args.overrides else "")
    train(cfg, args.resume, source)
    return 0


def cmd_submit(args) -> int:
    from bigtrain.slurm import Resources, status, submit

    if args.status:
        if args.config:
            raise ValueError("--status RUN_DIR takes no CONFIG")
        status(args.status)
        return 0
    if not args.config:
        raise ValueError("give a CONFIG.yaml to submit, or --status RUN_DIR")
    cfg = _load_train_config(args.config, args.overrides)
    source = args.config + (f" + overrides {' '.join(args.overrides)}" if args.overrides else "")
    res = Resources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                    partition=args.partition, time=args.time, account=args.account, qos=args.qos,
                    constraint=args.constraint, mem=args.mem, cpus_per_task=args.cpus_per_task,
                    max_requeues=args.max_requeues, signal_delay_s=args.signal_delay, job_name=args.job_name)
    submit(cfg, source, res, dry_run=args.dry_run)
    return 0


def cmd_pack(args) -> int:
    from bigtrain.data.pack import PackOptions, describe, pack
    opts = PackOptions(resolution=args.resolution, shard_size=args.shard_size, fmt=args.format, labels=args.labels,
                       workers=args.workers, channels=args.channels, fit=args.fit, quality=args.quality,
                       prefix=args.prefix, split=args.split, seed=args.seed, max_images=args.max_images,
                       classes=args.classes.split(",") if args.classes else None)
    manifest = pack(args.src, args.out_dir, opts, progress=not args.quiet)
    print(describe(manifest, args.out_dir))
    return 0


def cmd_generate(args) -> int:
    from bigtrain.distributed import print0
    import torch

    from bigtrain.generate import (generate_images, interpolation_frames, load_any_generator, parse_layers,
                                   standing_stats, style_mix_grid, write_outputs)
    from bigtrain.models.sampling import parse_seeds

    if not args.out and not args.outdir:
        raise ValueError("give --out GRID.png and/or --outdir DIR")
    if args.style_mix and args.interp:
        raise ValueError("--style-mix and --interp make different pictures; give one")
    seeds = parse_seeds(args.seeds)
    G, info = load_any_generator(args.checkpoint, args.device)
    trunc = args.trunc
    if args.no_trunc:
        if trunc is not None:
            raise ValueError("--trunc and --no-trunc contradict each other; give one")
    elif trunc is None and (info.get("truncation") or {}).get("default") is not None:
        trunc = info["truncation"]["default"]  # the export's own default (bigtrain export --trunc)
        print0(f"truncation {trunc} (the export's default; --trunc overrides it)")
    if args.standing_stats:
        standing_stats(G, args.standing_stats, args.batch, args.device)
    grid_w = None
    if args.style_mix:
        cols = parse_seeds(args.style_mix)
        layers = parse_layers(args.mix_layers, G.num_ws) if hasattr(G, "num_ws") else []
        img = style_mix_grid(G, seeds, cols, layers, trunc, args.class_idx, args.batch, args.device)
        names = ["blank"] + [f"col-seed{c:04d}" for c in cols]
        names += [n for r in seeds for n in [f"row-seed{r:04d}"] + [f"mix-row{r:04d}-col{c:04d}" for c in cols]]
        grid_w = len(cols) + 1
    elif args.interp:
        img = interpolation_frames(G, seeds, args.interp, trunc, args.class_idx, args.batch, args.device)
        names = [f"frame{i:04d}" for i in range(len(img))]
        grid_w = args.interp
    elif args.all_classes:
        if not G.c_dim or args.class_idx is not None:
            raise ValueError("--all-classes is for conditional models, without --class")
        img = torch.cat([generate_images(G, seeds, trunc=trunc, class_idx=k, batch=args.batch, device=args.device)
                         for k in range(G.c_dim)])
        names = [f"class{k}-seed{s:04d}" for k in range(G.c_dim) for s in seeds]
        grid_w = len(seeds)
    else:
        img = generate_images(G, seeds, trunc=trunc, class_idx=args.class_idx, batch=args.batch,
                              device=args.device)
        names = [f"seed{s:04d}" for s in seeds]
        # Conditional models without --class cycle through the classes: one column per class.
        grid_w = G.c_dim if (G.c_dim and args.class_idx is None) else None
    for p in write_outputs(img, names, args.out, args.outdir, grid_w)[:3]:
        print0(f"wrote {p}")
    if args.outdir:
        print0(f"wrote {len(names)} images to {args.outdir}")
    return 0


def cmd_export(args) -> int:
    from bigtrain.distributed import print0
    from bigtrain.export import export_generator
    from bigtrain.export.run import parse_formats

    export_generator(args.checkpoint, args.out, parse_formats(args.format), args.dtype, args.trunc,
                     args.standing_stats, printer=print0)
    return 0


def cmd_import(args) -> int:
    from bigtrain.distributed import print0
    from bigtrain.export.importer import import_nvlabs

    import_nvlabs(args.src, args.out, args.trunc, printer=print0)
    return 0


def cmd_eval(args) -> int:
    import dataclasses

    from bigtrain.data import open_data
    from bigtrain.data.shards import names_command_or_url
    from bigtrain.distributed import DistEnv, build_strategy, print0
    from bigtrain.distributed.strategy.base import StrategyConfig
    from bigtrain.generate import load_generator_from_checkpoint, standing_stats
    from bigtrain.metrics import InceptionFeatures, evaluate, parse_metrics

    specs = parse_metrics(args.metrics)
    env = DistEnv.from_environ()
    strategy = None
    if env.world_size > 1:
        strategy = build_strategy(StrategyConfig(strategy="ddp", device=args.device), env)
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


def cmd_plot(args) -> int:
    from bigtrain.metrics.plot import plot_runs

    drawn = plot_runs(args.runs, args.key, args.out, args.label, args.title, args.logy)
    for label, series in drawn.items():
        last = series[-1]
        best = min(series, key=lambda p: p[1])
        print(f"{label}: {len(series)} points, last {last[1]:.4g} at kimg {last[0]:g}, lowest {best[1]:.4g} "
              f"at kimg {best[0]:g}")
    print(f"wrote {args.out}")
    return 0


def cmd_bench(args) -> int:
    from bigtrain.bench import bench_train, format_table
    from bigtrain.distributed import print0
    from bigtrain.train.loop import Trainer

    cfg = _load_train_config(args.config, args.overrides)
    trainer = Trainer(cfg, config_source=args.config)
    result = bench_train(trainer, iters=args.iters, warmup=args.warmup)
    result["config"] = args.config
    print0(format_table(result))
    if args.json and trainer.strategy.is_main:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cmd_bench_data(args) -> int:
    from bigtrain.bench import bench_data, format_data_table
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    result = bench_data(args.sources, workers=args.workers, batch=args.batch, batches=args.batches,
                        warmup=args.warmup, resolution=args.resolution, folder=args.folder,
                        export=args.export_folder)
    print(format_data_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cmd_bench_crops(args) -> int:
    from bigtrain.bench import make_crops
    from bigtrain.distributed import print0
    n = make_crops(args.src, args.out, args.count, args.resolution, args.seed)
    print0(f"wrote {n} {args.resolution}x{args.resolution} crops to {args.out}")
    return 0


def cmd_kernels(args) -> int:
    """Build the CUDA kernels (into the cache, or only compile-check them), then check parity;
    with --emulate, the same through the CPU emulation of the kernels' source."""
    import time

    from bigtrain.distributed import print0
    from bigtrain.ops._build import SOURCES, build, build_emulation, emulation

    if args.check and args.build_only:
        raise ValueError("--check builds and checks; --build-only only builds: give one")
    if args.emulate and args.arch:
        raise ValueError("--arch picks the GPUs to build for; --emulate builds for the CPU: give one")
    if args.arch:
        os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    names = args.only or list(SOURCES)
    if args.emulate:
        t0 = time.time()
        module = build_emulation(verbose=args.verbose)
        how = "loaded from the cache" if module.bigtrain_cached else "compiled"
        print0(f"emulation of {', '.join(SOURCES)}: {how} in {time.time() - t0:.0f} s: {module.__file__}")
    else:
        for name in names:
            t0 = time.time()
            module = build(name, verbose=args.verbose)  # KernelBuildError carries the compiler log
            how = "loaded from the cache" if module.bigtrain_cached else "compiled"
            print0(f"{name}: {how} in {time.time() - t0:.0f} s: {module.__file__}")
    if args.build_only:
        return 0
    import torch
    from bigtrain.ops.kernel_check import check, format_rows
    if args.emulate:
        with emulation():
            rows = check("cpu", kernels=set(names))
        print0("kernels' source run on the CPU emulation (checks their code, not a GPU):")
    elif not torch.cuda.is_available():
        print0("no GPU visible: built, but the parity check needs one (--emulate checks the source on the CPU; "
              "--build-only only builds)")
        return 6
    else:
        rows = check("cuda", kernels=set(names))
    print0(format_rows(rows))
    failed = [r for r in rows if not r.ok]
    print0(f"{len(rows) - len(failed)} of {len(rows)} checks within their limits "
          "(rel err: the kernel's against the float64 reference; ref err: the reference's own in that dtype)")
    return 1 if failed else 0


def cmd_bench_kernels(args) -> int:
    from bigtrain.bench import bench_kernels, format_kernel_table
    result = bench_kernels(tuple(args.resolutions), iters=args.iters)
    print(format_kernel_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cmd_bench_gpu(args) -> int:
    from bigtrain.bench_gpu import ROW_NAMES, SECTIONS, format_report, run_report
    from bigtrain.distributed import print0
    report = run_report(args.out, toy=args.toy, sections=args.sections or SECTIONS, rows=args.rows or ROW_NAMES,
                        budget_s=args.budget)
    print0(format_report(report))
    print0(f"wrote {os.path.join(args.out, 'gpu-report.json')} and gpu-report.txt")
    return 0


def cmd_bench_generate(args) -> int:
    from bigtrain.bench import bench_generate, format_generate_table
    from bigtrain.distributed import print0
    result = bench_generate(args.export, args.batch, args.rounds, args.threads)
    print0(format_generate_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cmd_config(args) -> int:
    from bigtrain.config import to_dict
    if args.reference:
        print(config_reference(), end="")
        return 0
    if not args.config:
        raise ValueError("give a CONFIG.yaml to resolve, or --reference")
    import yaml
    cfg = _load_train_config(args.config, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def config_reference() -> str:
    from bigtrain.config.reference import reference_markdown
    from bigtrain.models import family_names, get_family
    from bigtrain.train.config import TrainConfig
    families = {n: {"generator": get_family(n).generator.Config,
                    "discriminator": get_family(n).discriminator.Config} for n in family_names()}
    return reference_markdown(TrainConfig, families)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bigtrain", description="Distributed training for large GANs.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a GAN from a YAML config")
    t.add_argument("config", help="YAML run config, e.g. configs/demo/fashion32.yaml")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.total_kimg=10")
    t.add_argument("--resume", default="auto",
                   help="auto (newest checkpoint in run.dir, if any; the default), none, or a checkpoint file/folder")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("submit", help="submit a training run to Slurm (submitit): one task per GPU, checkpoint "
                                      "and requeue before the time limit; or --status RUN_DIR")
    s.add_argument("config", nargs="?", help="YAML run config; run.dir must be on storage every node sees")
    s.add_argument("overrides", nargs="*", help="key.sub=value overrides, as for train")
    s.add_argument("--status", metavar="RUN_DIR", help="show the run's newest job: Slurm state, attempts, checkpoint, logs")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per node, one task each (default 1); "
                   "0 for CPU nodes, with --tasks-per-node")
    s.add_argument("--tasks-per-node", type=int, default=None, help="default: --gpus-per-node")
    s.add_argument("--partition")
    s.add_argument("--time", default="24:00:00", help="time limit: minutes, H:MM:SS or D-HH:MM:SS (default 24:00:00)")
    s.add_argument("--account")
    s.add_argument("--qos")
    s.add_argument("--constraint")
    s.add_argument("--mem", help="memory per node as sbatch takes it: 64G, 500M, 0 = all")
    s.add_argument("--cpus-per-task", type=int, help="also the torch threads per rank unless run.num_threads is set")
    s.add_argument("--max-requeues", type=int, default=10,
                   help="requeue after a time-limit signal at most this many times (default 10)")
    s.add_argument("--signal-delay", type=int, default=120, metavar="SECONDS",
                   help="Slurm sends SIGUSR2 this long before the time limit (default 120)")
    s.add_argument("--job-name", help="default: bigtrain-<run dir name>")
    s.add_argument("--dry-run", action="store_true", help="print the sbatch script instead of submitting it")
    s.set_defaults(fn=cmd_submit)

    k = sub.add_parser("pack", help="pack images into WebDataset tar shards + dataset.json")
    k.add_argument("src", help="folder of images (recursive), .zip, .npz (uint8 'x', 'y'), or IDX folder/file")
    k.add_argument("out_dir", help="output folder for NAME-000000.tar ... and dataset.json")
    k.add_argument("--resolution", type=int, required=True, help="square output size (power of two)")
    k.add_argument("--shard-size", type=int, default=5000, help="samples per shard (default 5000)")
    k.add_argument("--format", default="png", choices=["png", "jpg", "webp", "raw"],
                   help="image encoding; raw = uint8 .npy (largest, fastest to read)")
    k.add_argument("--labels", default="auto",
                   help="auto (subfolder names of folders/zips; IDX/npz labels), none, or a CSV 'path,label' / "
                        "JSON {path: label} file with paths relative to SRC")
    k.add_argument("--workers", type=int, default=1, help="parallel processes, one shard each at a time")
    k.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="force 1 (grayscale) or 3 (RGB); default: grayscale sources stay 1 channel")
    k.add_argument("--fit", default="resize", choices=["resize", "pad"],
                   help="resize: centre crop + Lanczos (default); pad: centre smaller images on black")
    k.add_argument("--quality", type=int, default=95, help="jpg/webp quality")
    k.add_argument("--prefix", default="train", help="shard name prefix (default train)")
    k.add_argument("--split", default="train", help="IDX folders: train or t10k")
    k.add_argument("--seed", type=int, default=0, help="shuffles samples across shards; -1 keeps source order")
    k.add_argument("--max-images", type=int, default=None,
                   help="pack only the first N source images (of the --classes chosen)")
    k.add_argument("--classes", help="comma-separated class names or indices: pack only images of these classes "
                                     "(labelled sources; indices and names stay the source's)")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(fn=cmd_pack)

    g = sub.add_parser("generate", help="write images from an export or a checkpoint's G_ema")
    g.add_argument("checkpoint", help="export folder (bigtrain export), training checkpoint (ckpt-*.pt, best.pt) or run directory")
    g.add_argument("--seeds", default="0-63", help="e.g. 0-63 or 1,5,9 (default 0-63)")
    g.add_argument("--trunc", type=float, default=None,
                   help="truncation trick (default none): StyleGAN2 psi in [0, 1], 0.7 trades variety for quality; "
                        "BigGAN threshold t, z truncated to [-t, t] (e.g. 0.5); ProGAN has none")
    g.add_argument("--no-trunc", action="store_true",
                   help="no truncation, even when the export records a default (bigtrain export --trunc)")
    g.add_argument("--class", dest="class_idx", type=int, default=None, help="class index for conditional models (default: the i-th seed listed gets class i mod classes, a column per class)")
    g.add_argument("--all-classes", action="store_true",
                   help="conditional models: every seed in every class, one row per class (the seeds as columns)")
    g.add_argument("--standing-stats", type=int, default=0, metavar="N",
                   help="batch-norm generators (BigGAN): re-estimate BN statistics over N batches first")
    g.add_argument("--style-mix", metavar="COL_SEEDS",
                   help="StyleGAN2: style-mixing grid, --seeds as rows and these seeds as columns; each cell is its "
                        "column's image with the --mix-layers styles of its row")
    g.add_argument("--mix-layers", default="0-3",
                   help="w layers a row gives in --style-mix (default 0-3, the coarse ones: pose and shape)")
    g.add_argument("--interp", type=int, default=0, metavar="STEPS",
                   help="StyleGAN2: latent walk in w through --seeds, STEPS frames from each seed to the next")
    g.add_argument("--out", help="PNG grid path")
    g.add_argument("--outdir", help="folder for one PNG per seed")
    g.add_argument("--batch", type=int, default=32)
    g.add_argument("--device", default="cpu")
    g.set_defaults(fn=cmd_generate)

    x = sub.add_parser("export", help="export a checkpoint's G_ema: model.safetensors + config.json, and ONNX / "
                                      "TorchScript, each checked against the checkpoint")
    x.add_argument("checkpoint", help="training checkpoint (ckpt-*.pt, best.pt) or run directory (its newest checkpoint)")
    x.add_argument("--out", required=True, help="folder to write the export into")
    x.add_argument("--format", default="safetensors",
                   help="safetensors (always written, with config.json), onnx, torchscript: comma-separated, or all "
                        "(default safetensors)")
    x.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="dtype of the weights in model.safetensors (ONNX and TorchScript graphs are float32)")
    x.add_argument("--trunc", type=float, default=None,
                   help="default truncation recorded in config.json, used by bigtrain generate on this export "
                        "(StyleGAN2 psi, BigGAN threshold); the graphs take it as an input")
    x.add_argument("--standing-stats", type=int, default=0, metavar="N",
                   help="batch-norm generators (BigGAN): re-estimate BN statistics over N batches before exporting")
    x.set_defaults(fn=cmd_export)

    im = sub.add_parser("import", help="an NVlabs StyleGAN2 pickle (stylegan2-ada-pytorch, stylegan3) -> an export "
                                       "folder, reading it without running anything in it")
    im.add_argument("src", help="network pickle with G_ema (network-snapshot-*.pkl or a published pretrained one)")
    im.add_argument("--out", required=True, help="export folder to write (model.safetensors + config.json)")
    im.add_argument("--trunc", type=float, default=None,
                    help="default truncation recorded in config.json, used by bigtrain generate on this export")
    im.set_defaults(fn=cmd_import)

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
    e.set_defaults(fn=cmd_eval)

    pl = sub.add_parser("plot", help="plot a logged value (default the FID) against kimg from runs' stats.jsonl")
    pl.add_argument("runs", nargs="+", help="run directories (one line each)")
    pl.add_argument("--key", help="the stats.jsonl key, e.g. Metrics/fid10k, Loss/G/main (default: the run's FID)")
    pl.add_argument("--out", required=True, help="PNG path")
    pl.add_argument("--label", action="append", help="legend label per run, in order (default: folder names)")
    pl.add_argument("--title")
    pl.add_argument("--logy", action="store_true", help="logarithmic y axis")
    pl.set_defaults(fn=cmd_plot)

    b = sub.add_parser("bench", help="measure throughput: training (img/s, sec/kimg, memory), data loading, kernels, "
                                     "or the one-shot GPU report")
    bsub = b.add_subparsers(dest="what", required=True)
    bt = bsub.add_parser("train", help="time training iterations of a config")
    bt.add_argument("config")
    bt.add_argument("overrides", nargs="*")
    bt.add_argument("--iters", type=int, default=20, help="timed iterations")
    bt.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    bt.add_argument("--json", help="also write the result as JSON here")
    bt.set_defaults(fn=cmd_bench)
    bd = bsub.add_parser("data", help="time the shard loader (and a folder-of-PNG baseline) in images/s")
    bd.add_argument("sources", nargs="+",
                    help="shard folders (with dataset.json) or URL patterns, as data.source takes; timed side by side")
    bd.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default 1)")
    bd.add_argument("--batch", type=int, default=64)
    bd.add_argument("--batches", type=int, default=50, help="timed batches")
    bd.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    bd.add_argument("--resolution", type=int, default=None, help="decode to this size (default: as stored)")
    bd.add_argument("--folder", help="also time a folder-of-PNG Dataset (PIL per file) over this folder")
    bd.add_argument("--export-folder", action="store_true",
                    help="first write the first source's images into --folder as PNG files")
    bd.add_argument("--threads", type=int, default=None, help="torch threads in the main process")
    bd.add_argument("--json", help="also write the result as JSON here")
    bd.set_defaults(fn=cmd_bench_data)
    bc = bsub.add_parser("crops", help="make benchmark images: random square crops of photos, as PNG")
    bc.add_argument("src", help="folder of photos")
    bc.add_argument("out", help="output folder")
    bc.add_argument("--count", type=int, default=2000)
    bc.add_argument("--resolution", type=int, default=256)
    bc.add_argument("--seed", type=int, default=0)
    bc.set_defaults(fn=cmd_bench_crops)
    kn = sub.add_parser("kernels", help="build the CUDA kernels and check them against the PyTorch reference")
    kn.add_argument("--check", action="store_true", help="build, then run the parity table (the default action)")
    kn.add_argument("--build-only", action="store_true", help="only compile (no GPU needed with --arch)")
    kn.add_argument("--arch", help="TORCH_CUDA_ARCH_LIST to build for, e.g. 9.0 (default: the visible GPUs)")
    kn.add_argument("--only", nargs="+", choices=["upfirdn2d", "bias_act", "modconv"], help="a subset of the kernels")
    kn.add_argument("--emulate", action="store_true",
                    help="build the kernels' source for the CPU emulation and check that (no GPU or nvcc needed)")
    kn.add_argument("--verbose", action="store_true", help="show the compiler commands")
    kn.set_defaults(fn=cmd_kernels)

    bk = bsub.add_parser("kernels", help="GPU: each CUDA kernel vs the reference and the copy-bandwidth floor")
    bk.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024], help="StyleGAN2 sizes (default 256 1024)")
    bk.add_argument("--iters", type=int, default=20)
    bk.add_argument("--json", help="also write the result as JSON here")
    bk.set_defaults(fn=cmd_bench_kernels)
    bu = bsub.add_parser("gpu", help="one-shot GPU report (about 6 min): environment, kernel build + parity, kernel "
                                     "benchmarks, StyleGAN2-256 paper256 img/s (kernels vs reference, bf16/fp16/fp32), "
                                     "a profile")
    bu.add_argument("--out", required=True, help="folder for gpu-report.json, gpu-report.txt and the tables")
    bu.add_argument("--toy", action="store_true", help="the same report on the CPU at a toy size (no GPU needed)")
    # Names checked by bench_gpu.run_report, not by choices=: building the parser must not import torch.
    bu.add_argument("--sections", nargs="+", default=None, metavar="SECTION",
                    help="run only these: environment kernels bench-kernels train profile (default all)")
    bu.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                    help="training rows, in priority order: bf16-kernels fp16-kernels fp32-kernels bf16-reference "
                         "fp16-reference fp32-reference (default all that fit the budget)")
    bu.add_argument("--budget", type=float, default=350, metavar="SECONDS",
                    help="time for the whole report on the GPU (default 350); the training rows get what the other "
                         "sections leave")
    bu.set_defaults(fn=cmd_bench_gpu)
    bg = bsub.add_parser("generate", help="CPU images/s of an export: PyTorch vs TorchScript vs ONNX Runtime, side by side")
    bg.add_argument("export", help="export folder (bigtrain export --format all)")
    bg.add_argument("--batch", type=int, default=64)
    bg.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the median counts (default 5)")
    bg.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime (default torch's)")
    bg.add_argument("--json", help="also write the result as JSON here")
    bg.set_defaults(fn=cmd_bench_generate)
    c = sub.add_parser("config", help="print a config as resolved (defaults, preset, file, overrides)")
    c.add_argument("config", nargs="?")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--reference", action="store_true", help="print the reference of every key (Markdown)")
    c.set_defaults(fn=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after options (`train CFG --resume none a.b=1`), which
    # argparse alone does not accept once the overrides list has been consumed.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from bigtrain.config import ConfigError
    if os.environ.get("BIGTRAIN_DEBUG"):
        return args.fn(args)  # full tracebacks, for bug reports
    try:
        return args.fn(args)
    except KeyboardInterrupt:  # a second Ctrl+C during training, or one anywhere else
        print("bigtrain: interrupted (Ctrl+C): stopped at once; nothing was written for the step under way",
              file=sys.stderr)
        return 130
    except ConfigError as e:
        print(f"bigtrain: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"bigtrain: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        for cls in type(e).__mro__:
            if cls.__module__.startswith("bigtrain.") and cls.__name__ in _ERRORS:
                if cls.__name__ == "Interrupted":
                    return 128 + e.signum  # a checkpoint was written; nothing more to say
                code, prefix = _ERRORS[cls.__name__]
                print(f"bigtrain: {prefix}{e}", file=sys.stderr)
                return code
        raise


# bigtrain's own errors: exit code and message prefix. Matched by name along the exception's
# classes, so handling one never imports the others' modules (whose dependencies, e.g. submitit
# or pillow, a kernels-only environment may lack).
_ERRORS = {"DataError": (4, "data error: "), "TrainingDiverged": (3, ""), "SubmitError": (5, ""),
           "KernelBuildError": (6, ""), "RunDirBusy": (7, ""), "RunIOError": (8, ""),
           "Interrupted": (None, "")}


if __name__ == "__main__":
    sys.exit(main())
