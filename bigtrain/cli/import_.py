"""`bigtrain import SRC --out DIR`: an NVlabs StyleGAN2 pickle as an export folder, nothing in it run."""
from __future__ import annotations


def run(args) -> int:
    from bigtrain.distributed import print0
    from bigtrain.export.importer import import_nvlabs

    import_nvlabs(args.src, args.out, args.trunc, printer=print0)
    return 0


def add(sub) -> None:
    im = sub.add_parser("import", help="an NVlabs StyleGAN2 pickle (stylegan2-ada-pytorch, stylegan3) -> an export "
                                       "folder, reading it without running anything in it")
    im.add_argument("src", help="network pickle with G_ema (network-snapshot-*.pkl or a published pretrained one)")
    im.add_argument("--out", required=True, help="export folder to write (model.safetensors + config.json)")
    im.add_argument("--trunc", type=float, default=None,
                    help="default truncation recorded in config.json, used by bigtrain generate on this export")
    im.set_defaults(fn=run)
