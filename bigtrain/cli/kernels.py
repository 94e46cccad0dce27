"""`bigtrain kernels`: build the CUDA kernels (or their CPU emulation) and check them."""
from __future__ import annotations

import os


def run(args) -> int:
    """Build the CUDA kernels (into the cache, or only compile-check them), then check parity;
    with --emulate, the same through the CPU emulation of the kernels' source."""
    import time

    from bigtrain.distributed import print0
    from bigtrain.ops._build import SOURCES, build, build_emulation, emulation, how_loaded, load

    if args.check and args.build_only:
        raise ValueError("--check builds and checks; --build-only only builds: give one")
    if args.json and args.build_only:
        raise ValueError("--json writes the parity table's rows; --build-only runs no table")
    if args.emulate and args.arch:
        raise ValueError("--arch picks the GPUs to build for; --emulate builds for the CPU: give one")
    if args.arch:
        os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    names = args.only or list(SOURCES)
    if args.emulate:
        t0 = time.time()
        module = build_emulation(verbose=args.verbose)
        print0(f"emulation of {', '.join(SOURCES)}: {how_loaded(module)} in {time.time() - t0:.0f} s: {module.__file__}")
    else:
        for name in names:
            t0 = time.time()
            # The check runs what the ops load (an ahead-of-time build first); --build-only compiles.
            # KernelBuildError carries the compiler log.
            module = build(name, args.verbose) if args.build_only else load(name, args.verbose)
            print0(f"{name}: {how_loaded(module)} in {time.time() - t0:.0f} s: {module.__file__}")
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
    if args.json:
        import dataclasses
        import json
        from pathlib import Path
        Path(args.json).write_text(json.dumps([{**dataclasses.asdict(r), "ok": r.ok} for r in rows], indent=1) + "\n")
    print0(f"{len(rows) - len(failed)} of {len(rows)} checks within their limits "
          "(rel err: the kernel's against the float64 reference; ref err: the reference's own in that dtype)")
    return 1 if failed else 0


def add(sub) -> None:
    kn = sub.add_parser("kernels", help="build the CUDA kernels and check them against the PyTorch reference")
    kn.add_argument("--check", action="store_true", help="build, then run the parity table (the default action)")
    kn.add_argument("--build-only", action="store_true", help="only compile (no GPU needed with --arch)")
    kn.add_argument("--arch", help="TORCH_CUDA_ARCH_LIST to build for, e.g. 9.0 (default: the visible GPUs)")
    kn.add_argument("--only", nargs="+", choices=["upfirdn2d", "bias_act", "modconv"], help="a subset of the kernels")
    kn.add_argument("--emulate", action="store_true",
                    help="build the kernels' source for the CPU emulation and check that (no GPU or nvcc needed)")
    kn.add_argument("--json", metavar="FILE", help="also write the parity table's rows to FILE as JSON (one object per "
                    "row: kernel, case, dtype, order, rel_err, threshold, ref_err, ok)")
    kn.add_argument("--verbose", action="store_true", help="show the compiler commands")
    kn.set_defaults(fn=run)
