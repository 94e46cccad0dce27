"""`bigtrain bench train|data|crops|kernels|gpu|generate`: throughput measurements."""
from __future__ import annotations

from ._common import load_train_config

import json
import os


def _report(table: str, result: dict, json_path: str | None, write: bool = True) -> int:
    """Print the table; write the result as JSON where asked (``write``: this rank writes)."""
    from bigtrain.distributed import print0
    print0(table)
    if json_path and write:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cmd_bench(args) -> int:
    from bigtrain.bench.train import bench_train, format_table
    from bigtrain.train.loop import Trainer

    cfg = load_train_config(args.config, args.overrides)
    trainer = Trainer(cfg, config_source=args.config)
    result = bench_train(trainer, iters=args.iters, warmup=args.warmup)
    result["config"] = args.config
    return _report(format_table(result), result, args.json, trainer.strategy.is_main)


def cmd_bench_data(args) -> int:
    from bigtrain.bench.data import bench_data, format_data_table
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    result = bench_data(args.sources, workers=args.workers, batch=args.batch, batches=args.batches,
                        warmup=args.warmup, resolution=args.resolution, folder=args.folder,
                        export=args.export_folder)
    return _report(format_data_table(result), result, args.json)


def cmd_bench_crops(args) -> int:
    from bigtrain.bench.data import make_crops
    from bigtrain.distributed import print0
    n = make_crops(args.src, args.out, args.count, args.resolution, args.seed)
    print0(f"wrote {n} {args.resolution}x{args.resolution} crops to {args.out}")
    return 0


def cmd_bench_kernels(args) -> int:
    from bigtrain.bench.kernels import bench_kernels, format_kernel_table
    result = bench_kernels(tuple(args.resolutions), iters=args.iters)
    return _report(format_kernel_table(result), result, args.json)


def cmd_bench_gpu(args) -> int:
    from bigtrain.bench.gpu import ROW_NAMES, SECTIONS, format_report, run_report
    from bigtrain.distributed import print0
    report = run_report(args.out, toy=args.toy, sections=args.sections or SECTIONS, rows=args.rows or ROW_NAMES,
                        budget_s=args.budget, profile_row=args.profile_row)
    print0(format_report(report))
    print0(f"wrote {os.path.join(args.out, 'gpu-report.json')} and gpu-report.txt")
    return 0


def cmd_bench_generate(args) -> int:
    from bigtrain.bench.generate import bench_generate, format_generate_table
    result = bench_generate(args.export, args.batch, args.rounds, args.threads)
    return _report(format_generate_table(result), result, args.json)


def add(sub) -> None:
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
    bk = bsub.add_parser("kernels", help="GPU: each CUDA kernel vs the reference and the copy-bandwidth floor")
    bk.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024], help="StyleGAN2 sizes (default 256 1024)")
    bk.add_argument("--iters", type=int, default=20)
    bk.add_argument("--json", help="also write the result as JSON here")
    bk.set_defaults(fn=cmd_bench_kernels)
    bu = bsub.add_parser("gpu", help="one-shot GPU report (about 6 min): environment, kernel build + parity, kernel "
                                     "benchmarks, StyleGAN2-256 paper256 img/s (kernels vs reference, bf16/fp16/fp32), "
                                     "ProGAN-256 and BigGAN-128 img/s (kernels vs reference), a profile")
    bu.add_argument("--out", required=True, help="folder for gpu-report.json, gpu-report.txt and the tables")
    bu.add_argument("--toy", action="store_true", help="the same report on the CPU at a toy size (no GPU needed)")
    # Names checked by bench.gpu.run_report, not by choices=: building the parser must not import torch.
    bu.add_argument("--sections", nargs="+", default=None, metavar="SECTION",
                    help="run only these: environment kernels bench-kernels train profile (default all)")
    bu.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                    help="training rows, in priority order: bf16-kernels bf16-kernels-autograd-conv "
                         "bf16-kernels-sep-epilogue bf16-kernels-cl bf16-kernels-batch4 bf16-reference progan-bf16-kernels progan-bf16-reference "
                         "biggan-bf16-kernels biggan-bf16-reference bf16-kernels-ada fp16-kernels fp32-kernels "
                         "bf16-kernels-sync fp16-reference fp32-reference (default all that fit the budget)")
    bu.add_argument("--profile-row", default="bf16-kernels", metavar="ROW",
                    help="the training row the profile section traces (default bf16-kernels)")
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
