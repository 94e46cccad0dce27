"""docs/configuration.md is the generated reference, and every key in it is documented."""
from __future__ import annotations

import glob
import os
import re

import pytest

from bigtrain.cli.config import config_reference
from bigtrain.config import iter_fields
from bigtrain.train.config import TrainConfig

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "configuration.md")


def test_docs_configuration_md_matches_the_schema():
    with open(DOC) as f:
        committed = f.read()
    assert committed == config_reference(), "regenerate with: bigtrain config --reference > docs/configuration.md"


def test_every_key_has_a_description():
    rows = [l for l in config_reference().splitlines() if l.startswith("| `")]
    undocumented = [r.split("`")[1] for r in rows if r.rstrip().endswith("|  |")]
    assert not undocumented, f"fields without a '# comment' beside them: {undocumented}"
    # Every static leaf key of the schema is listed.
    keys = {r.split("`")[1] for r in rows}
    static = {k for k, *_ in iter_fields(TrainConfig)} - {"generator", "discriminator"}
    assert static <= keys
    assert {"generator.z_dim", "discriminator.mbstd_group_size"} <= keys


def test_config_command_prints_the_resolved_config(tmp_path):
    from conftest import run_cli
    r = run_cli(["config", "configs/demo/fashion32.yaml", "train.total_kimg=3"],
                cwd=os.path.join(os.path.dirname(DOC), ".."))
    assert r.returncode == 0, r.stderr
    assert re.search(r"total_kimg: 3(\.0)?\n", r.stdout) and "channel_base: 256" in r.stdout


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(os.path.dirname(DOC), "..", "configs", "**", "*.yaml"),
                                                  recursive=True)), ids=os.path.basename)
def test_every_shipped_config_resolves(path):
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    cfg = load_config(path, [], TrainConfig)
    assert cfg.train.total_kimg > 0
