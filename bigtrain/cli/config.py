"""`bigtrain config`: a config as resolved, or the reference of every key."""
from __future__ import annotations

from ._common import load_train_config


def run(args) -> int:
    from bigtrain.config import to_dict
    if args.reference:
        print(config_reference(), end="")
        return 0
    if not args.config:
        raise ValueError("give a CONFIG.yaml to resolve, or --reference")
    import yaml
    cfg = load_train_config(args.config, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def config_reference() -> str:
    from bigtrain.config.reference import reference_markdown
    from bigtrain.models import family_names, get_family
    from bigtrain.train.config import TrainConfig
    families = {n: {"generator": get_family(n).generator.Config,
                    "discriminator": get_family(n).discriminator.Config} for n in family_names()}
    return reference_markdown(TrainConfig, families)


def add(sub) -> None:
    c = sub.add_parser("config", help="print a config as resolved (defaults, preset, file, overrides)")
    c.add_argument("config", nargs="?")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--reference", action="store_true", help="print the reference of every key (Markdown)")
    c.set_defaults(fn=run)
