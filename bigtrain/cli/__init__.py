"""`bigtrain train | submit | pack | generate | export | import | eval | plot | bench | kernels | config`: one
entry point under python, torchrun, srun or submitit. One module per command, each with ``add(sub)``
(its parser; building it imports no torch) and the function its parser calls."""
from __future__ import annotations

import argparse
import os
import sys

from . import bench, config, eval_, export, generate, import_, kernels, pack, plot, submit, train

COMMANDS = (train, submit, pack, generate, export, import_, eval_, plot, bench, kernels, config)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bigtrain", description="Distributed training for large GANs.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
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
