"""`bigtrain export`: a checkpoint's G_ema as safetensors + config.json, ONNX, TorchScript."""
from __future__ import annotations


def run(args) -> int:
    from bigtrain.distributed import print0
    from bigtrain.export import export_generator
    from bigtrain.export.run import parse_formats

    export_generator(args.checkpoint, args.out, parse_formats(args.format), args.dtype, args.trunc,
                     args.standing_stats, printer=print0)
    return 0


def add(sub) -> None:
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
    x.set_defaults(fn=run)
