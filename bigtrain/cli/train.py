"""`bigtrain train CONFIG [key=value ...]`: train a GAN from a YAML config."""
from __future__ import annotations

from ._common import load_train_config


def run(args) -> int:
    from bigtrain.train.run import train

    cfg = load_train_config(args.config, args.overrides)
    source = args.config + (f" + overrides {' '.join(args.overrides)}" if args.overrides else "")
    train(cfg, args.resume, source)
    return 0


def add(sub) -> None:
    t = sub.add_parser("train", help="train a GAN from a YAML config")
    t.add_argument("config", help="YAML run config, e.g. configs/demo/fashion32.yaml")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.total_kimg=10")
    t.add_argument("--resume", default="auto",
                   help="auto (newest checkpoint in run.dir, if any; the default), none, or a checkpoint file/folder")
    t.set_defaults(fn=run)
