"""`bigtrain bench gpu --out DIR`: the one-shot GPU report.

One command, one GPU, a cold kernel cache, about six minutes: the environment, the kernels'
build and parity check, the kernel micro-benchmarks, training throughput with the kernels and with
the reference ops (StyleGAN2-256 at NVlabs' paper256 settings, configs/stylegan2/paper256.yaml, in
bf16, fp16 and fp32; ProGAN-256 and BigGAN-128 in bf16), and a profile of StyleGAN2's bf16 kernels
row. It writes DIR/gpu-report.json
(after every section, so a run cut short keeps what it measured) and DIR/gpu-report.txt.

Every section runs under a guard (a failure is recorded and the next section runs) and a time
budget. Loops stop at their budget after the iteration that passes it; a build cannot be
stopped, so a section that overruns records it. ``--toy`` runs the same code on the CPU with tiny
networks, for the test suite.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import torch

from bigtrain.distributed import print0

REPO = Path(__file__).resolve().parents[2]  # bigtrain/bench/gpu.py -> the repository
CONFIG = REPO / "configs" / "stylegan2" / "paper256.yaml"
# NVlabs stylegan2-ada-pytorch at --cfg=paper256, batch 32, measured beside bigtrain on one H200
# (/work/shared/measurements/h200-2026-12-04): the figure every row is compared with.
NVLABS_H200 = {"img_per_sec": 157.8, "ms_per_iter": 202.8,
               "label": "vs NVlabs H200 2026-12-04 (measured separately)"}
NVLABS_PARAMS = {"G": 24_767_458, "D": 24_001_089}  # NVlabs' networks at the paper256 settings

SECTIONS = ("environment", "kernels", "bench-kernels", "train", "profile")
# Seconds per section on the GPU. A section gets its budget, capped by what is left of the whole
# (--budget) less the budgets of the sections after it; the train section (its 150 s is what the
# sections before it leave it) gets all that is left less the profile's budget, so an early overrun
# shortens the training rows and time an early section did not use goes to them.
BUDGETS = {"environment": 20, "kernels": 120, "bench-kernels": 30, "train": 150, "profile": 45}
ELASTIC = "train"
# A training row starts only with time for its build, first iteration and two more left (_row_need);
# a model's first row with the kernels or the reference: these (the reference's first iteration took
# 40 s on the H200), and at least these for a row unlike those before it.
MIN_ROW_S = {True: 15, False: 45}
# The profile starts only with this long left (it took 51 s of its 45 on the H200: a trainer's build,
# warm-up and the parse of the trace run to their end whatever the deadline); else it is skipped.
MIN_PROFILE_S = 30


@dataclasses.dataclass(frozen=True)
class Model:
    """A network the train section times: its config, how 16-bit precision is applied to it, and
    what makes it toy-sized for --toy."""
    config: Path
    reduced_precision_res: int | None  # 16-bit rows: that many top resolutions (StyleGAN2's scheme); None: autocast everywhere
    overrides: tuple[str, ...] = ()  # on top of the config, in every row
    toy: tuple[str, ...] = ()  # --toy: the config's networks cut down to CPU size

    @property
    def name(self) -> str:
        return str(self.config.relative_to(REPO))


_TOY_BATCH = ("train.batch_size=4", "train.batch_gpu=null")
MODELS = {
    # NVlabs' paper256 (what bigtrain is compared with); 16-bit in the top 4 resolutions, as NVlabs.
    "stylegan2": Model(CONFIG, 4, toy=(
        "data.resolution=16", "generator.z_dim=32", "generator.w_dim=32", "generator.mapping_layers=2",
        "generator.channel_base=256", "generator.channel_max=32", "discriminator.channel_base=256",
        "discriminator.channel_max=32", "discriminator.mbstd_group_size=4", *_TOY_BATCH,
        # Greg and Dreg every 2 iterations, so that 2 timed iterations include each once.
        "loss.pl_interval=2", "loss.r1_interval=2")),
    # The paper's ProGAN at 256, at its final resolution; bias + leaky ReLU through bias_act.
    "progan": Model(REPO / "configs" / "progan" / "bench256.yaml", None, toy=(
        "data.resolution=16", "generator.z_dim=32", "generator.channel_base=256", "generator.channel_max=32",
        "discriminator.channel_base=256", "discriminator.channel_max=32", *_TOY_BATCH)),
    # BigGAN-128 (the paper's res128 networks, class-conditional over 1000 random labels, orthogonal
    # regularization on), batch 32 on the one GPU.
    "biggan": Model(REPO / "configs" / "biggan" / "bench128.yaml", None,
                    overrides=("train.batch_size=32", "train.batch_gpu=null", "data.use_labels=true",
                               "loss.ortho_weight=0.0001"),
                    toy=("preset=res32", "data.resolution=32", "generator.ch=8", "discriminator.ch=8", *_TOY_BATCH)),
}


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    precision: str  # fp32 | bf16 | fp16 (16-bit: as the model's reduced_precision_res says)
    kernels: bool  # impl auto (the kernels once built and checked); False: BIGTRAIN_KERNELS=off
    warmup: int  # untimed iterations, the first one included
    iters: int  # timed iterations; a multiple of 16 times Greg and Dreg at their natural share
    overrides: tuple[str, ...] = ()  # config overrides that make this row (what it compares)
    model: str = "stylegan2"  # a key of MODELS

    @property
    def ops(self) -> str:
        return "kernels" if self.kernels else "reference"

    @property
    def compares(self) -> bool:
        """Its img/s compares with the reference row's and NVlabs' (it keeps their batch size)."""
        return not any(o.startswith("train.batch_size=") for o in self.overrides)


# In priority order, a row that does not fit the budget being skipped. First what compares: StyleGAN2
# bf16 with the kernels (the product), the same with autograd's own double backward through the
# convolutions (what train.conv_double_backward=wgrad replaces), the same with the modulated convolution's
# epilogue as separate ops (what train.modconv_epilogue=fused replaces), the same in channels_last (the layout
# experiment, whose first iteration autotunes cuDNN for NHWC again) and with the reference ops (seconds per iteration at
# 256x256, hence 2 + 8), then the kernels/reference pair for ProGAN and BigGAN; then the other
# precisions and variants. bf16-kernels-batch4: the bf16 row at batch 4, an eighth of the GPU's work
# for the same kernel launches and Python, so its ms/iter bounds the host's time per iteration from
# above (what the 2x target needs the host to beat; cuDNN autotuning off: its first iteration would
# otherwise autotune the new shapes). bf16-kernels-ada: ADA's pipe (blit, geometric, colour) at a
# constant p, what augmentation costs a step. bf16-kernels-sync: the bf16 row with the host check of
# every phase's loss (a sync per phase), to measure what skipping non-finite steps on the device saves.
ROWS = (Row("bf16-kernels", "bf16", True, 6, 32),
        Row("bf16-kernels-autograd-conv", "bf16", True, 6, 32, ("train.conv_double_backward=autograd",)),
        Row("bf16-kernels-sep-epilogue", "bf16", True, 4, 32, ("train.modconv_epilogue=separate",)),
        Row("bf16-kernels-cl", "bf16", True, 6, 32, ("train.channels_last=true",)),
        Row("bf16-kernels-batch4", "bf16", True, 4, 32, ("train.batch_size=4", "train.cudnn_benchmark=false")),
        Row("bf16-reference", "bf16", False, 2, 8),
        Row("progan-bf16-kernels", "bf16", True, 4, 16, model="progan"),
        Row("progan-bf16-reference", "bf16", False, 2, 8, model="progan"),
        Row("biggan-bf16-kernels", "bf16", True, 4, 16, model="biggan"),
        Row("biggan-bf16-reference", "bf16", False, 2, 8, model="biggan"),
        Row("bf16-kernels-ada", "bf16", True, 4, 32, ("augment.kind=fixed", "augment.p=0.2")),
        Row("fp16-kernels", "fp16", True, 4, 16), Row("fp32-kernels", "fp32", True, 4, 16),
        Row("bf16-kernels-sync", "bf16", True, 4, 32, ("train.skip_nonfinite_on_device=false",)),
        Row("fp16-reference", "fp16", False, 2, 8), Row("fp32-reference", "fp32", False, 2, 8))
ROW_NAMES = tuple(r.name for r in ROWS)
PROFILE = {"warmup": 2, "iters": 16}

# --toy: the same code on the CPU with networks small enough for the test suite (MODELS' toy).
TOY_ITERS = {"warmup": 1, "iters": 2}
TOY_BUDGET_S = 600


@dataclasses.dataclass
class Context:
    out: Path
    toy: bool
    device: torch.device
    rows: list[Row]
    report: dict
    profile_row: str = "bf16-kernels"
    deadline: float = math.inf  # of the running section, time.perf_counter()
    # Why the kernels must not run in this process (their parity table crashed its own), else None.
    kernels_unsafe: str | None = None

    def save(self) -> None:
        write_report(self.report, self.out)


# ------------------------------------------------------------------------------------------ driver
def run_report(out: str, toy: bool = False, sections=SECTIONS, rows=ROW_NAMES, budget_s: float = 350,
               argv: list[str] | None = None, profile_row: str = "bf16-kernels") -> dict:
    """Run the selected sections in order; returns the report (also written to ``out``).
    ``profile_row``: the training row the profile section traces."""
    if not toy and not torch.cuda.is_available():
        raise ValueError(f"bench gpu needs a GPU and none is visible (torch {torch.__version__}, CUDA "
                         f"{torch.version.cuda or 'none'}); --toy runs the same report on the CPU at a toy size")
    unknown = ([s for s in sections if s not in SECTIONS] + [r for r in rows if r not in ROW_NAMES]
               + [r for r in (profile_row,) if r not in ROW_NAMES])
    if unknown:
        raise ValueError(f"unknown section or row {unknown}; sections: {', '.join(SECTIONS)}; rows: "
                         f"{', '.join(ROW_NAMES)}")
    os.makedirs(out, exist_ok=True)
    # NVlabs' settings: float32 stays float32 (no TF32), cuDNN picks its fastest algorithms.
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    budget_s = TOY_BUDGET_S if toy else budget_s
    report = {"command": "bigtrain " + " ".join(argv if argv is not None else sys.argv[1:]), "toy": toy,
              "started": datetime.datetime.now().isoformat(timespec="seconds"), "budget_s": budget_s,
              "sections": {}, "nvlabs_h200": NVLABS_H200}
    selected = [s for s in SECTIONS if s in sections]
    ctx = Context(Path(out), toy, torch.device("cpu" if toy else "cuda"),
                  [r for r in _rows(toy) if r.name in rows], report, profile_row)
    t_start = time.perf_counter()
    end = t_start + budget_s
    for name in SECTIONS:
        rec: dict = {"status": "running"}
        report["sections"][name] = rec
        if name not in selected:
            rec.update(status="skipped", reason="not in --sections")
            continue
        # Time kept for the sections still to come; the elastic one takes what is left, so it
        # reserves nothing ahead of the sections before it.
        later = sum(BUDGETS[s] for s in selected[selected.index(name) + 1:] if s != ELASTIC)
        now = time.perf_counter()
        left = end - later - now
        ctx.deadline = end if toy else now + (left if name == ELASTIC else min(BUDGETS[name], left))
        rec["budget_s"] = round(ctx.deadline - now, 1)
        if ctx.deadline <= now:
            rec.update(status="skipped", reason=f"no time left of the {budget_s:.0f} s budget")
            continue
        print0(f"== {name} (budget {rec['budget_s']:.0f} s)")
        ctx.save()
        try:
            SECTION_FNS[name](ctx, rec)
            if rec["status"] == "running":
                rec["status"] = "ok"
        except Exception as e:  # recorded; the next section still runs
            rec.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            print0(f"{name}: {rec['error'].splitlines()[0]}")
        finally:
            _free(ctx.device)
        rec["elapsed_s"] = round(time.perf_counter() - now, 2)
        rec["over_budget"] = rec["elapsed_s"] > rec["budget_s"]
        ctx.save()
    report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    ctx.save()
    return report


def _rows(toy: bool) -> list[Row]:
    return [dataclasses.replace(r, **TOY_ITERS) for r in ROWS] if toy else list(ROWS)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _git() -> dict:
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError) as e:
        return {"commit": None, "error": f"{type(e).__name__}: {e}".splitlines()[0]}


# ------------------------------------------------------------------------------------- sections
def section_environment(ctx: Context, rec: dict) -> None:
    from bigtrain.bench.kernels import copy_bandwidth
    rec.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               git=_git(), bigtrain_kernels_env=os.environ.get("BIGTRAIN_KERNELS"),
               tf32=torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32,
               cudnn_benchmark=torch.backends.cudnn.benchmark, cpu_threads=torch.get_num_threads())
    if ctx.device.type == "cuda":
        p = torch.cuda.get_device_properties(ctx.device)
        rec.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gb=p.total_memory / 2 ** 30,
                   multiprocessors=p.multi_processor_count)
        rec["copy_bytes_per_s"] = copy_bandwidth()
    else:
        rec.update(device=f"cpu ({platform.processor() or platform.machine()})",
                   copy_bandwidth="skipped: no GPU (the device-to-device copy floor needs one)")


def section_kernels(ctx: Context, rec: dict) -> None:
    """`bigtrain kernels --check`: build each kernel (or load it from the cache), then the parity
    table; --toy: the kernels' source through the CPU emulation, float32 rows only."""
    from bigtrain.ops._build import SOURCES, KernelBuildError, build_emulation, emulation, how_loaded, load
    from bigtrain.ops.kernel_check import check, format_rows
    builds, built = [], []
    if ctx.toy:
        rec["mode"] = "CPU emulation of the kernels' source, float32 rows (checks their code, not a GPU)"
        t0 = time.perf_counter()
        module = build_emulation()
        builds.append({"kernel": "emulation", "seconds": round(time.perf_counter() - t0, 2),
                       "how": how_loaded(module)})
        with emulation():
            rows = check("cpu", (torch.float32,))
    else:
        rec["mode"] = "CUDA kernels on the GPU, every dtype (as `bigtrain kernels --check`)"
        # Cold cache: the three builds run at once, each in its own process (bigtrain's loader,
        # its cache and lock); loading below then finds them built.
        t0 = time.perf_counter()
        procs = {name: subprocess.Popen([sys.executable, "-m", "bigtrain", "kernels", "--build-only", "--only", name],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name in SOURCES}
        failed_builds = {}
        for name, proc in procs.items():
            out, _ = proc.communicate()
            print0(f"kernels: build process for {name} exited {proc.returncode} at "
                   f"{time.perf_counter() - t0:.1f} s: {_first_lines(out.strip(), 1)}")
            if proc.returncode != 0:
                failed_builds[name] = out.strip()[-8000:]
        rec["parallel_build_s"] = round(time.perf_counter() - t0, 2)
        for name in SOURCES:
            t0 = time.perf_counter()
            if name in failed_builds:  # its log is the build process's; building again would repeat it
                builds.append({"kernel": name, "seconds": 0.0, "how": "failed", "error": failed_builds[name]})
                print0(f"kernels: {name} failed to build: {_first_lines(failed_builds[name])}")
                continue
            try:
                module = load(name)
                how = how_loaded(module)
                builds.append({"kernel": name, "seconds": round(time.perf_counter() - t0, 2), "how": how})
                built.append(name)
            except KernelBuildError as e:  # its log goes to the JSON; the others are still checked
                builds.append({"kernel": name, "seconds": round(time.perf_counter() - t0, 2), "how": "failed",
                               "error": str(e)})
            print0(f"kernels: {name} {builds[-1]['how']} in {builds[-1]['seconds']:.1f} s"
                   + (f": {_first_lines(builds[-1]['error'])}" if "error" in builds[-1] else ""))
        rows = _check_in_child(ctx, rec, built) if built else []
    failed = [r for r in rows if not r.ok]
    rec.update(builds=builds, checks=len(rows), passed=len(rows) - len(failed),
               failing=[{**dataclasses.asdict(r), "ok": False} for r in failed],
               all_passed=bool(rows) and not failed and all("error" not in b for b in builds))
    if ctx.kernels_unsafe:
        rec.update(status="error", error=ctx.kernels_unsafe)
    (ctx.out / "kernels-check.txt").write_text(format_rows(rows) + f"\n{len(rows) - len(failed)} of {len(rows)} "
                                               "checks within their limits\n")
    rec["table_file"] = "kernels-check.txt"


def child_gave_rows(returncode: int, path: Path) -> bool:
    """Whether the parity table's child process finished its table: `bigtrain kernels --check` exits 0
    (every row passed) or 1 (some failed) with its --json file written. An exception in the child
    also exits 1, but writes no file: then, as for any other exit, the child crashed."""
    return returncode in (0, 1) and path.exists()


def _check_in_child(ctx: Context, rec: dict, built: list[str]) -> list:
    """The parity table of ``built`` on the GPU, in a child process. The table is the first run of
    the kernels on this GPU: a fault there (an illegal address) leaves the process's CUDA context
    unusable, which in this process would fail every section and row after it. If the child dies,
    ctx.kernels_unsafe says why: the kernel rows, bench-kernels and a kernels profile are skipped,
    and the reference rows still run."""
    from bigtrain.ops.kernel_check import Row as CheckRow
    path = ctx.out / "kernels-check.json"
    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        # `bigtrain kernels --check` itself: it loads the builds from the cache and exits 1 when rows fail.
        proc = subprocess.run([sys.executable, "-m", "bigtrain", "kernels", "--check", "--only", *built, "--json",
                               str(path)], capture_output=True, text=True,
                              timeout=max(ctx.deadline - t0, 120))  # 171 rows took 13 s on the H200; 342 now
        ended = f"exited {proc.returncode}" if proc.returncode >= 0 else f"was killed by signal {-proc.returncode}"
        tail = (proc.stdout + proc.stderr).strip()
    except subprocess.TimeoutExpired as e:
        ended, tail = f"ran past {e.timeout:.0f} s", ""
        proc = None
    rec["check_s"] = round(time.perf_counter() - t0, 2)
    if proc is None or not child_gave_rows(proc.returncode, path):
        ctx.kernels_unsafe = (f"the kernels' parity table {ended} in its own process"
                              + (f": {tail.splitlines()[-1]}" if tail else ""))
        rec["check_error"] = {"message": ctx.kernels_unsafe, "output_tail": tail[-4000:]}
        print0(f"kernels: {ctx.kernels_unsafe}; the kernels are not run in this report")
        return []
    return [CheckRow(**{k: v for k, v in d.items() if k != "ok"}) for d in json.loads(path.read_text())]


def section_bench_kernels(ctx: Context, rec: dict) -> None:
    if ctx.device.type != "cuda":
        rec.update(status="skipped", reason="no GPU: `bench kernels` times the CUDA kernels against the reference")
        return
    if ctx.kernels_unsafe:
        rec.update(status="skipped", reason=ctx.kernels_unsafe)
        return
    from bigtrain.bench.kernels import bench_ema, bench_kernels, format_ema, format_kernel_table
    rec.update(bench_kernels((256, 1024), iters=20))
    rec["table"] = format_kernel_table(rec)
    # The G_ema update of paper256's G, the trainer's multi-tensor way against the loop it replaced
    # (a failure here is recorded beside the kernels' table, which stands).
    try:
        rec["ema"] = bench_ema(build_nets(CONFIG, device=ctx.device)[0])
        rec["table"] += "\n" + format_ema(rec["ema"])
    except Exception as e:
        rec["ema"] = {"error": f"{type(e).__name__}: {e}"}
        rec["table"] += f"\nG_ema update: {rec['ema']['error']}"


def section_train(ctx: Context, rec: dict) -> None:
    rec.update(config=MODELS["stylegan2"].name, overrides=_base_overrides(ctx), nvlabs_h200=NVLABS_H200,
               params=count_params(), params_nvlabs=NVLABS_PARAMS, rows=[])
    rec["params_match"] = rec["params"] == NVLABS_PARAMS
    # Per model timed: its config, parameters at full size, and (filled by its first row) what was built.
    rec["models"] = {k: {"config": MODELS[k].name, "overrides": list(MODELS[k].overrides),
                         "params": count_params(MODELS[k].config, list(MODELS[k].overrides))}
                     for k in dict.fromkeys(row.model for row in ctx.rows)}
    for row in ctx.rows:
        r = {"row": row.name, "model": row.model, "precision": row.precision, "ops": row.ops,
             "overrides": list(row.overrides), "planned": {"warmup": row.warmup, "iters": row.iters}}
        rec["rows"].append(r)
        left, need = ctx.deadline - time.perf_counter(), 0 if ctx.toy else _row_need(row, rec["rows"])
        if row.kernels and ctx.kernels_unsafe:
            r.update(status="skipped", reason=ctx.kernels_unsafe)
            continue
        if left < need:
            r.update(status="skipped", reason=f"not started: {max(left, 0):.0f} s left of the train section's "
                                              f"budget, {need:.0f} s needed for its first iterations")
            continue
        print0(f"train: {row.name}")
        t0 = time.perf_counter()
        try:
            train_row(ctx, row, r)
            r["status"] = "ok"
        except Exception as e:  # an OOM or a crash in one row; the next row still runs
            r.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            print0(f"train: {row.name}: {r['error'].splitlines()[0]}")
        finally:
            _free(ctx.device)
        r["elapsed_s"] = round(time.perf_counter() - t0, 2)
        for key in ("params_built", "resolution", "batch_size"):  # kept on a row only where it differs
            if key in r and rec["models"][row.model].setdefault(key, r[key]) == r[key]:
                del r[key]
        _ratios_to_reference(ctx.rows, rec["rows"])
        if r["status"] == "ok":
            print0(f"train: {row.name}: {r['img_per_sec']:.1f} img/s, {r['ms_per_iter']:.1f} ms/iter, peak "
                   f"{r['peak_gb']:.2f} GB, first iteration {r['first_iter_s']:.1f} s, {r['warmup']}+{r['iters']} "
                   f"iterations")
        ctx.save()


def _ratios_to_reference(rows: list[Row], done: list[dict]) -> None:
    """vs_reference of each finished row: its img/s over the row of the same model and precision with
    the reference ops and no other change (the issue's ratio for ProGAN and BigGAN)."""
    by_name = {row.name: row for row in rows}
    ok = [r for r in done if r.get("status") == "ok"]
    for r in ok:
        row = by_name[r["row"]]
        if not row.compares:
            continue
        ref = next((q for q in ok if by_name[q["row"]].model == row.model and q["precision"] == row.precision
                    and not by_name[q["row"]].kernels and not by_name[q["row"]].overrides), None)
        if ref is not None:
            r["vs_reference"] = r["img_per_sec"] / ref["img_per_sec"]
            r["reference_row"] = ref["row"]


def _row_need(row: Row, done: list[dict]) -> float:
    """Seconds for the build, first iteration and two more: as the last finished row of the same
    model, ops, precision and overrides took. A row unlike those before it (another precision or
    layout) autotunes cuDNN again on its first iteration (24 s for fp16 and 43 s for fp32 after the
    bf16 rows on the H200, against under 1 s for a bf16 variant's): then as long as the model's
    first row with these ops took to its third iteration, and at least MIN_ROW_S."""
    def need(start: dict, steady: dict) -> float:  # start's build and first iteration, steady's two more
        return start["build_s"] + start["first_iter_s"] + 2 * steady["ms_per_iter"] / 1000

    ok = [r for r in done if r.get("status") == "ok" and r["ops"] == row.ops and r["model"] == row.model]
    same = [r for r in ok if r["precision"] == row.precision and r["overrides"] == list(row.overrides)]
    if same:
        return need(same[-1], same[-1])
    return max(MIN_ROW_S[row.kernels], need(ok[0], ok[-1])) if ok else MIN_ROW_S[row.kernels]


def section_profile(ctx: Context, rec: dict) -> None:
    """torch.profiler over 16 iterations of a training row (--profile-row; StyleGAN2's bf16 kernels
    row unless told: one Dreg and four Greg among them, whichever step they start at), after 2
    warm-up iterations of a fresh trainer."""
    from torch.profiler import ProfilerActivity, profile

    from bigtrain.train.observe import TickStats
    warmup, iters = (TOY_ITERS["warmup"], 2) if ctx.toy else (PROFILE["warmup"], PROFILE["iters"])
    row = next(r for r in ROWS if r.name == ctx.profile_row)
    if row.kernels and ctx.kernels_unsafe:
        rec.update(status="skipped", reason=ctx.kernels_unsafe)
        return
    left = ctx.deadline - time.perf_counter()
    if not ctx.toy and left < MIN_PROFILE_S:
        rec.update(status="skipped", reason=f"not started: {max(left, 0):.0f} s left of the budget, "
                                            f"{MIN_PROFILE_S} s needed")
        return
    cuda = ctx.device.type == "cuda"
    with _ops(row.kernels):
        trainer = build_trainer(ctx, row)
        stats = TickStats()
        for _ in range(warmup):
            trainer.train_step(stats)
        _sync(ctx.device)
        step0 = trainer.progress.step
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            done = 0
            while done < iters:
                trainer.train_step(stats)
                done += 1
                if time.perf_counter() > ctx.deadline:
                    break
            _sync(ctx.device)
    phases = phase_counts(trainer.phases, step0, done)
    del trainer
    events = prof.key_averages()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = events.table(sort_by=key, row_limit=30)
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    # Kernels only, as the table's footer counts: an autograd Function's range (UpFirDn2d, BiasAct)
    # also carries its kernels' time and would count them twice.
    kernels_only = [e for e in events if not cuda or e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(getattr(e, attr) for e in kernels_only)
    top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:30]
    unit = "CUDA" if cuda else "CPU"
    header = (f"torch.profiler: {done} iterations of the {row.name} row ({_phase_text(phases)}), after "
              f"{warmup} warm-up; sorted by self {unit} time; self {unit} time in all {total_us / 1000:.1f} ms\n")
    cpu_table = events.table(sort_by="self_cpu_time_total", row_limit=15)
    cpu_total_us = sum(e.self_cpu_time_total for e in events)
    table_file = f"profile-{row.name}.txt"
    (ctx.out / table_file).write_text(
        header + table + f"\n\nThe same iterations sorted by self CPU time (the host's share; under the profiler): "
        f"{cpu_total_us / 1000:.1f} ms in all\n" + cpu_table + "\n")
    rec["total_self_cpu_ms"] = cpu_total_us / 1000
    rec.update(row=row.name, device=str(ctx.device), warmup=warmup, iters=done, phases=phases,
               sorted_by=f"self {unit} time", total_self_ms=total_us / 1000, table_file=table_file,
               top=[{"name": e.key, f"self_{unit.lower()}_ms": getattr(e, attr) / 1000, "calls": e.count,
                     "share": getattr(e, attr) / total_us if total_us else 0.0} for e in top])


SECTION_FNS = {"environment": section_environment, "kernels": section_kernels,
               "bench-kernels": section_bench_kernels, "train": section_train, "profile": section_profile}


# ------------------------------------------------------------------------------------ training
class _ops:
    """Within: impl auto runs the kernels (``kernels``) or the reference (BIGTRAIN_KERNELS=off,
    read by bigtrain.ops at each call)."""

    def __init__(self, kernels: bool):
        self.kernels = kernels

    def __enter__(self):
        self.before = os.environ.get("BIGTRAIN_KERNELS")
        if not self.kernels:
            os.environ["BIGTRAIN_KERNELS"] = "off"

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop("BIGTRAIN_KERNELS", None)
        else:
            os.environ["BIGTRAIN_KERNELS"] = self.before


def _base_overrides(ctx: Context) -> list[str]:
    return [f"run.dir={ctx.out / 'run'}", f"distributed.device={ctx.device.type}", "data.source=synthetic",
            "train.cudnn_benchmark=true", "train.allow_tf32=false"]


def row_overrides(ctx: Context, row: Row) -> list[str]:
    model = MODELS[row.model]
    res = model.reduced_precision_res if row.precision != "fp32" else None
    return [*_base_overrides(ctx), *model.overrides, *(model.toy if ctx.toy else ()),
            f"train.precision={row.precision}", f"train.reduced_precision_res={'null' if res is None else res}",
            *row.overrides]


def build_trainer(ctx: Context, row: Row):
    """A Trainer for ``row`` whose real images are random uint8 already on its device."""
    from bigtrain.config import load_config
    from bigtrain.data.source import SyntheticSource
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    config = str(MODELS[row.model].config)
    cfg = load_config(config, row_overrides(ctx, row), TrainConfig)
    trainer = Trainer(cfg, config_source=config)  # NVlabs' cuDNN/TF32 settings: _base_overrides
    assert isinstance(trainer.data, SyntheticSource)  # data.source=synthetic, from row_overrides
    trainer.data.to(trainer.device)  # no copy per iteration: the images are resident on the GPU
    return trainer


def train_row(ctx: Context, row: Row, r: dict) -> None:
    """One row: build, the first iteration alone, the rest of the warm-up, then the timed
    iterations (CUDA-synchronised wall clock, as `bigtrain bench train`)."""
    from bigtrain.bench.train import time_steps
    from bigtrain.ops._cuda import kernel_calls
    from bigtrain.ops._impl import auto_decisions
    from bigtrain.train.loop import TrainingDiverged
    from bigtrain.train.observe import TickStats, peak_memory_gb

    dev = ctx.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    calls0 = kernel_calls()
    with _ops(row.kernels):
        t0 = time.perf_counter()
        trainer = build_trainer(ctx, row)
        r["build_s"] = round(time.perf_counter() - t0, 2)
        r["params_built"] = {k: sum(p.numel() for p in w.raw.parameters()) for k, w in trainer.wrapped.items()}
        r["resolution"], r["batch_size"] = trainer.model_info["resolution"], trainer.stage.batch_size
        stats = TickStats()
        t0 = time.perf_counter()
        trainer.train_step(stats)
        _sync(dev)
        r["first_iter_s"] = round(time.perf_counter() - t0, 2)
        warm = 1
        while warm < row.warmup and time.perf_counter() < ctx.deadline:
            trainer.train_step(stats)
            warm += 1
        step0 = trainer.progress.step
        n, sec, nimg = time_steps(trainer, stats, row.iters, ctx.deadline)
    # Steps the GPU skipped for a non-finite loss are counted at the trainer's next tick; count them
    # now, after the clock stopped. Too many in a row is the trainer's divergence error: the row's
    # figures are measured all the same, so it is recorded with them rather than losing them.
    try:
        trainer.settle_nonfinite()
    except TrainingDiverged as e:
        r["diverged"] = str(e).split(";")[0]
    phases = phase_counts(trainer.phases, step0, n)
    cycle = math.lcm(*(p.interval for p in trainer.phases))
    if dev.type != "cuda":
        ran = "reference (CPU: impl auto takes the reference)"
    elif not row.kernels:
        ran = "reference (BIGTRAIN_KERNELS=off)"
    else:
        fell_back = sorted(k for k, ok in auto_decisions().items() if not ok)
        used = sorted(k for k, n in kernel_calls().items() if n > calls0.get(k, 0))
        r["kernel_ops_called"] = used
        if not used:  # (an earlier row's fallback says nothing about a model that calls no kernel)
            ran = "none of bigtrain's kernels: this model calls none (cuDNN and torch ops only)"
        else:
            ran = "kernels" if not fell_back else f"kernels, but the reference for {', '.join(fell_back)} (auto fell back)"
    r.update(ops_ran=ran, warmup=warm, iters=n, seconds=round(sec, 3), images=nimg,
             img_per_sec=nimg / sec, ms_per_iter=1000 * sec / n, peak_gb=peak_memory_gb(dev),
             peak_gb_is="torch.cuda.max_memory_allocated" if dev.type == "cuda" else "process max RSS (CPU)",
             phases=phases, natural_share=n % cycle == 0, first_step=step0,
             nonfinite_skipped=trainer.progress.nonfinite_total)
    if trainer.loss.augment_pipe is not None:
        r["augment_p"] = round(float(trainer.loss.augment_pipe.p), 6)
    if row.model == "stylegan2" and row.compares:  # NVlabs' figure is for its paper256 StyleGAN2 at batch 32
        r["vs_nvlabs"] = nimg / sec / NVLABS_H200["img_per_sec"]
    if n < row.iters or warm < row.warmup:
        r["cut_short"] = f"the train section's budget ran out: {warm}+{n} of {row.warmup}+{row.iters} iterations"


def phase_counts(phases, step0: int, n: int) -> dict[str, int]:
    """How many times each phase ran in steps step0 .. step0+n-1 (the trainer's rule: a phase runs
    when step % interval == 0)."""
    return {p.name: sum(p.repeat for s in range(step0, step0 + n) if s % p.interval == 0) for p in phases}


def build_nets(config: Path = CONFIG, overrides: list[str] | None = None, device="meta"):
    """A config's G and D, unconditional, built on ``device`` (meta: no memory, no data)."""
    from bigtrain.config import load_config
    from bigtrain.models import get_family
    from bigtrain.train.config import TrainConfig

    cfg = load_config(str(config), overrides or [], TrainConfig)
    family = get_family(cfg.model)
    res = cfg.data.resolution
    with torch.device(device):
        G = family.build_generator(cfg.generator, res, 3, 0)
        D = family.build_discriminator(cfg.discriminator, res, 3, 0, growing=cfg.grow.enabled)
    return G, D


def count_params(config: Path = CONFIG, overrides: list[str] | None = None) -> dict[str, int]:
    """G and D parameters of a config, built on the meta device (no memory, no data)."""
    G, D = build_nets(config, overrides)
    return {"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())}


# -------------------------------------------------------------------------------------- output
def write_report(report: dict, out: Path) -> None:
    from bigtrain.checkpoint import write_atomic
    data = (json.dumps(report, indent=2, default=str) + "\n").encode()
    write_atomic(str(out / "gpu-report.json"), lambda f: f.write(data))
    try:
        text = format_report(report)
    except Exception:  # the JSON holds the figures; a formatting bug must not stop the measuring
        text = "formatting the text report failed (the figures are in gpu-report.json):\n" + traceback.format_exc()
    (out / "gpu-report.txt").write_text(text + "\n")


def _first_lines(text: str, n: int = 2) -> str:
    return " / ".join([line.strip() for line in text.splitlines() if line.strip()][:n])[:200]


def _phase_text(phases: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in phases.items())


def _status(rec: dict) -> str:
    if rec.get("status") == "error":
        return "ERROR " + rec["error"].splitlines()[0]
    if rec.get("status") == "skipped":
        return "skipped: " + rec["reason"]
    return rec.get("status", "?")


def format_report(report: dict) -> str:
    s = report["sections"]
    lines = [f"bigtrain GPU report{' (--toy: CPU, toy size)' if report['toy'] else ''}, {report['started']}: "
             f"{report['command']}"]

    def head(name: str, title: str) -> dict:
        rec = s.get(name, {})
        t = (f"  [{rec['elapsed_s']:.1f} s of {rec['budget_s']:.0f}{', over budget' if rec.get('over_budget') else ''}]"
             if "elapsed_s" in rec else "")
        lines.append("")
        lines.append(f"== {title}{t}" + ("" if rec.get("status") in ("ok", "running") else f": {_status(rec)}"))
        return rec

    e = head("environment", "environment")
    if e.get("status") == "ok":
        g = e["git"]
        commit = (g["commit"][:12] + (" (uncommitted changes)" if g.get("dirty") else "")) if g.get("commit") else \
            f"unknown ({g.get('error')})"
        bw = (f"{e['copy_bytes_per_s'] / 1e9:.0f} GB/s" if "copy_bytes_per_s" in e else e.get("copy_bandwidth"))
        lines += [f"device {e['device']}; torch {e['torch']}, CUDA {e['cuda']}, cuDNN {e['cudnn']}, Python "
                  f"{e['python']}; commit {commit}",
                  f"copy bandwidth {bw}; TF32 {'on' if e['tf32'] else 'off'}, cudnn.benchmark "
                  f"{'on' if e['cudnn_benchmark'] else 'off'}"]

    k = head("kernels", "kernels: build and parity")
    if "builds" in k:
        lines.append(k["mode"])
        if "parallel_build_s" in k:
            lines.append(f"  the three builds, in parallel processes: {k['parallel_build_s']:.1f} s; then:")
        lines += [f"  {b['kernel']:<10} {b['how']:<22} {b['seconds']:7.1f} s"
                  + (f"  {_first_lines(b['error'])} (the log: gpu-report.json)" if "error" in b else "")
                  for b in k["builds"]]
        where = f" (a child process, {k['check_s']:.1f} s)" if "check_s" in k else ""
        lines.append(f"  parity{where}: {k['passed']} of {k['checks']} checks within their limits"
                     f"{' (all passed)' if k['all_passed'] else ''}; table in {k['table_file']}")
        for f in k["failing"][:20]:
            lines.append(f"  FAILED {f['kernel']} {f['case']} {f['dtype']} {f['order']}: rel err {f['rel_err']:.2e} "
                         f"> {f['threshold']:.0e}")

    b = head("bench-kernels", "bench kernels (resolutions 256, 1024)")
    if "table" in b:
        lines.append(b["table"])

    t = head("train", "train: random images resident on the device")
    if "rows" in t:
        built_note = " (--toy: cut down to {G:,} / {D:,})"
        for key, m in t.get("models", {}).items():
            size = (f" ({m['resolution']}x{m['resolution']}, batch {m['batch_size']})" if "resolution" in m else "")
            built = m.get("params_built")
            line = (f"{key}: {m['config']}{size}: G {m['params']['G']:,} / D {m['params']['D']:,} parameters"
                    + (built_note.format(**built) if report["toy"] and built else ""))
            if key == "stylegan2":
                line += (f"; NVlabs' paper256 G {NVLABS_PARAMS['G']:,} / D {NVLABS_PARAMS['D']:,}: "
                         f"{'match' if t['params_match'] else 'DIFFER'}")
            lines.append(line)
        vs = NVLABS_H200["label"]
        lines.append(f"{'row':<26} {'img/s':>8} {'ms/iter':>8} {'peak GB':>8} {'1st iter s':>10} {'iters':>6} "
                     f"{'Greg/Dreg':>10} {'vs ref':>7}  {vs}")
        for r in t["rows"]:
            if r.get("status") != "ok":
                lines.append(f"{r['row']:<26} {_status(r)}")
                continue
            ph = r["phases"]
            share = (f"{ph.get('Greg', 0)}/{ph.get('Dreg', 0)}" + ("" if r["natural_share"] else "*")
                     if r.get("model", "stylegan2") == "stylegan2" else "-")
            ref = f"{r['vs_reference']:.2f}" if "vs_reference" in r else "-"
            nv = f"{r['vs_nvlabs']:.2f}" if "vs_nvlabs" in r else "-"
            lines.append(f"{r['row']:<26} {r['img_per_sec']:>8.1f} {r['ms_per_iter']:>8.1f} {r['peak_gb']:>8.2f} "
                         f"{r['first_iter_s']:>10.1f} {r['warmup']:>2}+{r['iters']:<3} {share:>10} {ref:>7}  {nv}")
        lines.append(f"NVlabs stylegan2-ada-pytorch on an H200, 2026-12-04 (measured separately): "
                     f"{NVLABS_H200['img_per_sec']} img/s, {NVLABS_H200['ms_per_iter']} ms/iter")
        lines += textwrap.wrap(
            "rows: StyleGAN2 unless named progan- or biggan-; StyleGAN2's bf16/fp16 in its top 4 resolutions of G and "
            "D (train.reduced_precision_res=4), ProGAN's and BigGAN's autocast everywhere, fp32 everywhere; kernels "
            "= impl auto, reference = BIGTRAIN_KERNELS=off; vs ref: img/s over the reference row of the same model "
            "and precision. iters: warm-up+timed. Greg/Dreg: their runs among the timed iterations (* = not their "
            "natural 1-in-4 / 1-in-16 share: the timed count is not a multiple of 16). bf16-kernels-batch4: batch 4, "
            "cuDNN autotuning off, no ratios: an eighth of the GPU's work for the same launches, so its ms/iter bounds "
            "the host's time per iteration from above. bf16-kernels-ada: ADA's pipe (bgc) at a constant p of 0.2.", 110)
        notes = [f"  {r['row']}: {r[key]}" for r in t["rows"] for key in ("cut_short", "diverged") if key in r]
        notes += [f"  {r['row']}: ops ran: {r['ops_ran']}" for r in t["rows"]
                  if r.get("status") == "ok" and r["ops_ran"] != "kernels" and r["ops"] == "kernels"
                  and not report["toy"]]
        notes += [f"  {r['row']}: {r['nonfinite_skipped']} iteration(s) skipped for a non-finite loss"
                  for r in t["rows"] if r.get("nonfinite_skipped")]
        if report["toy"]:
            notes.append("  --toy: tiny networks on the CPU (StyleGAN2's Greg and Dreg every 2 iterations), where impl "
                         "auto\n  always takes the reference; the figures exercise the report, they measure nothing")
        lines += notes

    p = head("profile", f"profile of the {s.get('profile', {}).get('row', 'bf16-kernels')} row")
    if "top" in p:
        unit = p["sorted_by"].split()[-2]
        lines.append(f"{p['iters']} iterations ({_phase_text(p['phases'])}); self {unit} time "
                     f"{p['total_self_ms']:.1f} ms in all; top 10 (all 30 in {p['table_file']}):")
        ms_key = f"self_{unit.lower()}_ms"
        for row in p["top"][:10]:
            name = row["name"] if len(row["name"]) <= 60 else row["name"][:57] + "..."
            lines.append(f"  {name:<60} {row[ms_key]:>10.2f} ms {100 * row['share']:5.1f}% {row['calls']:>7} calls")
    if "elapsed_s" in report:
        lines.append("")
        lines.append(f"total {report['elapsed_s']:.0f} s (budget {report['budget_s']:.0f} s)")
    return "\n".join(lines)
