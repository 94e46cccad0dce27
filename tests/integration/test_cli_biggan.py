"""BigGAN as a user runs it: train through the CLI, exact resume, per-class generation,
truncation and standing statistics."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import biggan_config, run_cli
from PIL import Image
from test_resume import _assert_same_state, _trainer


@pytest.fixture(scope="module")
def trained(biggan_run):
    assert "training biggan at 16px" in (biggan_run.parent / "train.out").read_text()
    return biggan_run


def test_resume_is_exact(tmp_path):
    straight = _trainer(biggan_config(tmp_path / "straight"), tmp_path, "straight")
    straight.run()
    first = _trainer(biggan_config(tmp_path / "split", total_kimg=0.016), tmp_path, "first")
    ckpt = first.run()
    second = _trainer(biggan_config(tmp_path / "split"), tmp_path, "second", resume=ckpt)
    second.run()
    a, b = straight.state_dict().to_state(), second.state_dict().to_state()
    assert a["progress"] == b["progress"]
    for key in ("nets", "strategy", "data"):
        _assert_same_state(a[key], b[key], key)


def test_generate_class_rows_truncation_and_standing_stats(trained, tmp_path):
    grid = tmp_path / "all.png"
    r = run_cli(["generate", str(trained), "--seeds", "0-4", "--all-classes", "--out", str(grid),
                 "--outdir", str(tmp_path / "each")])
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(grid))
    # One row per class (10), one column per seed (5), 16x16 tiles.
    assert img.shape[:2] == (10 * 16, 5 * 16)
    assert (tmp_path / "each" / "class3-seed0002.png").exists()
    one = tmp_path / "c3.png"
    r = run_cli(["generate", str(trained), "--seeds", "0-4", "--class", "3", "--out", str(one),
                 "--outdir", str(tmp_path / "c3")])
    assert r.returncode == 0, r.stderr
    # --class 3 gives exactly the fourth row of the all-classes grid.
    for s in range(5):
        tile = np.asarray(Image.open(tmp_path / "c3" / f"seed{s:04d}.png"))
        assert np.array_equal(tile, img[3 * 16:4 * 16, s * 16:(s + 1) * 16])
    outs = {}
    for name, extra in (("plain", []), ("trunc", ["--trunc", "0.3"]), ("standing", ["--standing-stats", "4"])):
        p = tmp_path / f"{name}.png"
        r = run_cli(["generate", str(trained), "--seeds", "0-4", "--class", "1", "--out", str(p), *extra])
        assert r.returncode == 0, r.stderr
        outs[name] = np.asarray(Image.open(p)).astype(int)
    assert np.abs(outs["trunc"] - outs["plain"]).max() > 0
    assert np.abs(outs["standing"] - outs["plain"]).max() > 0
    r = run_cli(["generate", str(trained), "--seeds", "0", "--class", "1", "--all-classes", "--out", str(one)])
    assert r.returncode != 0 and "--all-classes" in r.stderr
