"""`bigtrain bench gpu` as a user runs it: --toy on the CPU, a real process, the report files; and
what the report does when its kernels' parity table crashes the process that runs it."""
from __future__ import annotations

import json
import time

import pytest
import torch
from conftest import kernel_emulation, run_cli

SECTIONS = ["environment", "kernels", "bench-kernels", "train", "profile"]
ROWS = ["bf16-kernels", "bf16-kernels-autograd-conv", "bf16-kernels-sep-epilogue", "bf16-kernels-cl", "bf16-kernels-batch4", "bf16-reference",
        "progan-bf16-kernels", "progan-bf16-reference", "biggan-bf16-kernels", "biggan-bf16-reference",
        "bf16-kernels-ada", "fp16-kernels", "fp32-kernels", "bf16-kernels-sync", "fp16-reference", "fp32-reference"]


@pytest.mark.slow  # about 15 s with the emulation built once per run (tests/conftest.py), 35 s without
def test_toy_report_has_every_section_row_and_table(tmp_path, tmp_path_factory):
    out = tmp_path / "report"
    cache = kernel_emulation(tmp_path_factory) / "cache"
    # Not the default row, to show --profile-row is followed; fp32 because on the CPU a bf16 row's
    # grouped convolutions take a per-group path that the profiler records as about 130,000 events,
    # and torch takes some 15 s to parse them.
    r = run_cli(["bench", "gpu", "--toy", "--out", str(out), "--profile-row", "fp32-kernels"], timeout=300,
                env={"BIGTRAIN_KERNEL_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "gpu-report.json").read_text())
    s = report["sections"]
    assert list(s) == SECTIONS
    for name in ("environment", "kernels", "train", "profile"):
        assert s[name]["status"] == "ok", (name, s[name].get("error"))
        assert s[name]["elapsed_s"] >= 0 and s[name]["budget_s"] > 0
    # No GPU: the kernel benchmark says why it did not run; the kernels' source ran on the emulation.
    assert s["bench-kernels"]["status"] == "skipped" and "GPU" in s["bench-kernels"]["reason"]
    k = s["kernels"]
    assert k["checks"] > 0 and k["passed"] + len(k["failing"]) == k["checks"]
    assert (out / "kernels-check.txt").read_text().count("float32") == k["checks"]

    t = s["train"]
    # The shipped paper256 config builds NVlabs' networks, parameter for parameter.
    assert t["params"] == {"G": 24_767_458, "D": 24_001_089} and t["params_match"]
    assert [row["row"] for row in t["rows"]] == ROWS
    # ProGAN and BigGAN at their benchmark sizes (the paper's networks), and what the toy built.
    m = t["models"]
    assert m["progan"]["config"] == "configs/progan/bench256.yaml" and m["progan"]["params"]["G"] > 20_000_000
    assert m["biggan"]["config"] == "configs/biggan/bench128.yaml" and m["biggan"]["params"]["D"] > 80_000_000
    assert m["progan"]["params_built"]["G"] < 100_000 and m["biggan"]["batch_size"] == 4
    for row in t["rows"]:
        assert row["status"] == "ok", (row["row"], row.get("error"))
        assert row["img_per_sec"] > 0 and row["ms_per_iter"] > 0 and row["iters"] == 2
        assert row["model"] == (row["row"].split("-")[0] if row["row"].startswith(("progan", "biggan")) else "stylegan2")
        if row["model"] == "stylegan2":
            # The toy's lazy regularizers run every 2 iterations: both are inside the timed window.
            assert row["phases"]["Greg"] == 1 and row["phases"]["Dreg"] == 1 and row["natural_share"]
        assert row.get("augment_p") == (0.2 if row["row"] == "bf16-kernels-ada" else None)
        if row["row"] == "bf16-kernels-batch4":
            assert row["overrides"] == ["train.batch_size=4", "train.cudnn_benchmark=false"]
            # Its own batch size: no ratio to the reference row or to NVlabs (the toy's batch is 4 anyway).
            assert "vs_nvlabs" not in row and "vs_reference" not in row
            continue
        if row["model"] == "stylegan2":
            assert row["vs_nvlabs"] > 0
        else:
            assert "vs_nvlabs" not in row  # NVlabs' figure is StyleGAN2's
        # Each row against the reference row of its model and precision (itself for a reference row).
        ref = f"{row['model']}-{row['precision']}-reference".removeprefix("stylegan2-")
        assert row["reference_row"] == ref and row["vs_reference"] > 0
    assert {row["precision"] for row in t["rows"]} == {"bf16", "fp16", "fp32"}

    text = (out / "gpu-report.txt").read_text()
    assert "vs NVlabs H200 2026-12-04 (measured separately)" in text and "157.8 img/s" in text
    for row in t["rows"]:
        line = next(l for l in text.splitlines() if l.startswith(row["row"] + " "))
        assert f"{row['img_per_sec']:.1f}" in line
        assert f"{row['vs_reference']:.2f}" in line if "vs_reference" in row else " - " in line
        assert f"{row['vs_nvlabs']:.2f}" in line if "vs_nvlabs" in row else line.endswith(" -")
    assert text.strip() in r.stdout  # printed at the end as well

    p = s["profile"]
    table = (out / p["table_file"]).read_text()
    assert "Name" in table and "# of Calls" in table
    assert p["iters"] == 2 and p["top"] and p["top"][0]["name"] in table and p["top"][0]["calls"] > 0
    assert p["row"] == "fp32-kernels" and p["table_file"] == "profile-fp32-kernels.txt"
    assert "== profile of the fp32-kernels row" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_or_toy_one_line_error(tmp_path):
    r = run_cli(["bench", "gpu", "--out", str(tmp_path / "report")])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "needs a GPU" in r.stderr and "--toy" in r.stderr
    assert not (tmp_path / "report").exists()


@pytest.mark.slow  # a child interpreter and a toy training row, about 5 s
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the parity table would run")
def test_a_parity_table_that_crashes_its_process_keeps_the_kernels_out_of_the_rest(tmp_path):
    """On a GPU the report runs the kernels' parity table in a child process, since a kernel's fault
    there would leave the report's own CUDA context unusable. Here the child really fails (no GPU
    to run the table on): the report names why, skips what would run the kernels in its own
    process, and still measures the reference."""
    from bigtrain.bench import gpu
    rows = [r for r in gpu._rows(toy=True) if r.name in ("bf16-kernels", "fp32-reference")]
    ctx = gpu.Context(tmp_path, True, torch.device("cpu"), rows, {"sections": {}})
    ctx.deadline = time.perf_counter() + 120
    kernels: dict = {}
    assert gpu._check_in_child(ctx, kernels, ["bias_act"]) == []
    # The child is `bigtrain kernels --check`; here it stops at the build (a CPU torch), on a GPU a
    # kernel's fault would stop it in the table. Either way no rows come back.
    assert ctx.kernels_unsafe.startswith("the kernels' parity table exited 6 in its own process: "), ctx.kernels_unsafe
    assert "cannot compile CUDA kernels" in kernels["check_error"]["output_tail"]
    train: dict = {}
    gpu.section_train(ctx, train)
    ran = {r["row"]: r for r in train["rows"]}
    assert ran["bf16-kernels"]["status"] == "skipped" and ran["bf16-kernels"]["reason"] == ctx.kernels_unsafe
    assert ran["fp32-reference"]["status"] == "ok" and ran["fp32-reference"]["img_per_sec"] > 0
    profile: dict = {}
    gpu.section_profile(ctx, profile)
    assert profile["status"] == "skipped" and profile["reason"] == ctx.kernels_unsafe


def test_the_parity_child_counts_as_finished_only_with_its_rows_written(tmp_path):
    # `bigtrain kernels --check` exits 1 when rows fail, and so does an exception that kills it (a
    # kernel's illegal address surfaces as one): only the --json file tells the two apart.
    from bigtrain.bench.gpu import child_gave_rows
    rows = tmp_path / "rows.json"
    assert not child_gave_rows(1, rows) and not child_gave_rows(0, rows)
    rows.write_text("[]")
    assert child_gave_rows(0, rows) and child_gave_rows(1, rows)
    assert not child_gave_rows(6, rows) and not child_gave_rows(-11, rows)


def test_help_lists_every_row_in_priority_order():
    from bigtrain.bench.gpu import ROW_NAMES
    r = run_cli(["bench", "gpu", "--help"], env={"COLUMNS": "2000"})  # one line per option: no wrapping
    assert r.returncode == 0, r.stderr
    assert list(ROW_NAMES) == ROWS and "training rows, in priority order: " + " ".join(ROWS) + " (default" in r.stdout
