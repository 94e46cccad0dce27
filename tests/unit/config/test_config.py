"""User-facing behaviour of the run config: YAML + presets + overrides, and its errors."""
import os
import subprocess
import sys

import pytest
import yaml

from bigtrain.config import ConfigError, dump_yaml, load_config, to_dict
from bigtrain.models.stylegan2 import StyleGAN2Generator
from bigtrain.train.config import TrainConfig


def write(tmp_path, text, name="run.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def load(path, overrides=()):
    return load_config(path, list(overrides), TrainConfig)


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as ei:
        load(path, overrides)
    return str(ei.value)


# ---------------------------------------------------------------- unknown keys and types

def test_unknown_key_names_dotted_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "train: {batch_sise: 8}\n")
    msg = error_of(path)
    assert "train.batch_sise" in msg
    assert path in msg
    assert "'batch_size'" in msg  # the suggestion, quoted (the list of valid keys is not)


def test_unknown_top_level_section_is_rejected(tmp_path):
    msg = error_of(write(tmp_path, "trian: {batch_size: 8}\n"))
    assert "trian" in msg and "'train'" in msg


def test_wrong_type_names_key_value_and_file(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: abc\n")
    msg = error_of(path)
    assert "train.batch_size" in msg
    assert "'abc'" in msg
    assert path in msg


def test_bool_field_rejects_integer_one(tmp_path):
    path = write(tmp_path, "data: {xflip: 1}\n")
    msg = error_of(path)
    assert "data.xflip" in msg and "1" in msg and path in msg
    # and a real bool is accepted
    assert load(write(tmp_path, "data: {xflip: false}\n", "ok.yaml")).data.xflip is False


def test_int_field_rejects_bool(tmp_path):
    msg = error_of(write(tmp_path, "train: {batch_size: true}\n"))
    assert "train.batch_size" in msg


@pytest.mark.parametrize("text, key, value", [
    ("loss: {r1_interval: 0}\n", "loss.r1_interval", "0"),
    ("data: {resolution: 30}\n", "data.resolution", "30"),
    ("train: {betas: [0.0, 1.5]}\n", "train.betas", "1.5"),
])
def test_post_init_validation_names_key_and_value(tmp_path, text, key, value):
    path = write(tmp_path, text)
    msg = error_of(path)
    assert key in msg and value in msg and path in msg


def test_literal_field_lists_choices(tmp_path):
    msg = error_of(write(tmp_path, "loss: {type: hingee}\n"))
    assert "loss.type" in msg and "'hingee'" in msg
    for choice in ("logistic", "hinge", "wgan", "lsgan", "ragan"):
        assert choice in msg


# ---------------------------------------------------------------- command-line overrides

def test_override_error_names_override_not_file(tmp_path):
    path = write(tmp_path, "train: {batch_size: 8}\n")
    msg = error_of(path, ["train.batch_size=x"])
    assert "train.batch_size=x" in msg
    assert "train.batch_size" in msg and "'x'" in msg
    assert path not in msg


def test_override_wins_over_file_and_is_parsed_as_yaml(tmp_path):
    path = write(tmp_path, "train: {batch_size: 8, g_lr: 0.1}\n")
    cfg = load(path, ["train.batch_size=16", "train.betas=[0.5, 0.9]", "train.batch_gpu=null"])
    assert cfg.train.batch_size == 16
    assert cfg.train.betas == [0.5, 0.9]
    assert cfg.train.batch_gpu is None
    assert cfg.train.g_lr == 0.1  # untouched sibling from the file survives


def test_dotted_override_into_shorthand_section_keeps_its_values(tmp_path):
    # `metrics: [fid500]` is shorthand for {names: [fid500]}; a later metrics.x=... must not drop the names.
    path = write(tmp_path, "metrics: [fid500]\n")
    cfg = load(path, ["metrics.interval_kimg=10"])
    assert cfg.metrics.names == ["fid500"] and cfg.metrics.interval_kimg == 10
    cfg = load(write(tmp_path, "{}\n", "empty.yaml"), ["metrics=[kid1k]", "metrics.batch=8"])
    assert cfg.metrics.names == ["kid1k"] and cfg.metrics.batch == 8


def test_dotted_override_into_a_scalar_is_an_error(tmp_path):
    path = write(tmp_path, "train: {batch_size: 8}\n")
    msg = error_of(path, ["train.batch_size.x=3"])
    assert "'train.batch_size' is 8" in msg and path in msg and "not a mapping" in msg


def test_override_of_unknown_key_is_rejected(tmp_path):
    path = write(tmp_path, "train: {batch_size: 8}\n")
    msg = error_of(path, ["train.batch_sise=8"])
    assert "train.batch_sise" in msg and "'batch_size'" in msg
    assert "override" in msg


@pytest.mark.parametrize("bad", ["train.batch_size", "=3", "train..batch_size=3"])
def test_malformed_override_is_rejected(tmp_path, bad):
    msg = error_of(write(tmp_path, "{}\n"), [bad])
    assert bad in msg


# ---------------------------------------------------------------- model family and presets

def test_unknown_model_lists_registered_families(tmp_path):
    path = write(tmp_path, "model: nosuch\n")
    msg = error_of(path)
    assert "nosuch" in msg and "stylegan2" in msg and path in msg


def test_preset_sets_values_and_file_wins(tmp_path):
    cfg = load(write(tmp_path, "preset: res256\n"))
    assert cfg.data.resolution == 256
    assert cfg.loss.r1_gamma == 1.0
    assert cfg.generator.channel_base == 16384

    cfg = load(write(tmp_path, "preset: res256\nloss: {r1_gamma: 7.5}\ndata: {resolution: 64}\n", "b.yaml"))
    assert cfg.loss.r1_gamma == 7.5
    assert cfg.data.resolution == 64
    assert cfg.generator.channel_base == 16384  # the rest of the preset still applies


def test_no_preset_gives_schema_defaults(tmp_path):
    cfg = load(write(tmp_path, "{}\n"))
    assert cfg.data.resolution == 32
    assert cfg.loss.r1_gamma == 10.0
    assert cfg.generator == StyleGAN2Generator.Config()


def test_unknown_preset_lists_presets(tmp_path):
    msg = error_of(write(tmp_path, "preset: res2048\n"))
    assert "res2048" in msg
    for name in ("res32", "res256", "res1024"):
        assert name in msg


def test_exponent_without_dot_is_accepted_as_float(tmp_path):
    path = write(tmp_path, "train: {g_lr: 1e-3}\n")
    assert isinstance(yaml.safe_load(open(path))["train"]["g_lr"], str)  # why the feature exists
    cfg = load(path)
    assert isinstance(cfg.train.g_lr, float)
    assert cfg.train.g_lr == pytest.approx(0.001)


def test_non_numeric_string_for_float_is_rejected(tmp_path):
    msg = error_of(write(tmp_path, "train: {g_lr: fast}\n"))
    assert "train.g_lr" in msg and "'fast'" in msg


def test_generator_keys_checked_against_family_schema(tmp_path):
    path = write(tmp_path, "generator: {z_dimm: 3}\n")
    msg = error_of(path)
    assert "generator.z_dimm" in msg and "'z_dim'" in msg and path in msg
    cfg = load(write(tmp_path, "generator: {z_dim: 3}\n", "ok.yaml"))
    assert isinstance(cfg.generator, StyleGAN2Generator.Config)
    assert cfg.generator.z_dim == 3


def test_generator_value_checked_by_family_post_init(tmp_path):
    msg = error_of(write(tmp_path, "discriminator: {mbstd_group_size: 0}\n"))
    assert "discriminator.mbstd_group_size" in msg


# ---------------------------------------------------------------- round trip and YAML errors

@pytest.mark.parametrize("text", [
    "{}\n",
    "preset: res64\ntrain: {batch_size: 16, g_lr: 2e-3, batch_gpu: 4}\nloss: {type: hinge, r1_gamma: 0.5}\n"
    "generator: {z_dim: 64}\ndata: {use_labels: true, max_images: 100}\n",
])
def test_to_dict_dump_reload_round_trip(tmp_path, text):
    cfg = load(write(tmp_path, text))
    out = tmp_path / "dumped.yaml"
    dump_yaml(cfg, str(out))
    again = load(str(out))
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)


def test_invalid_yaml_names_file(tmp_path):
    path = write(tmp_path, "train: {batch_size: [1, 2\n")
    msg = error_of(path)
    assert path in msg and "YAML" in msg


def test_top_level_list_is_rejected(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    msg = error_of(path)
    assert path in msg


def test_missing_file_is_named(tmp_path):
    path = str(tmp_path / "nope.yaml")
    assert path in error_of(path)


def _bigtrain_exe():
    # The console script that `pip install` put beside this interpreter: the real entry point.
    exe = os.path.join(os.path.dirname(sys.executable), "bigtrain")
    assert os.path.exists(exe), f"no bigtrain entry point at {exe}; install with pip install -e ."
    return exe


def test_cli_config_error_exits_2_without_traceback_or_run_dir(tmp_path):
    run_dir = tmp_path / "runs" / "bad"
    (tmp_path / "BAD.yaml").write_text(f"run: {{dir: {run_dir}}}\ntrain: {{batch_sise: 8}}\n")
    proc = subprocess.run([_bigtrain_exe(), "train", "BAD.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "train.batch_sise" in proc.stderr
    assert "BAD.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- values no run means
@pytest.mark.parametrize("override, shown", [("train.g_lr=inf", "'inf'"), ("train.d_lr=.nan", "nan"),
                                             ("loss.r1_gamma=-.inf", "-inf")])
def test_non_finite_numbers_are_refused_naming_key_and_source(tmp_path, override, shown):
    msg = error_of(write(tmp_path, "model: stylegan2\n"), [override])
    key = override.split("=")[0]
    assert f"command-line override '{override}'" in msg and f"key '{key}': expected a finite number, got {shown}" in msg
    msg = error_of(write(tmp_path, "train:\n  g_lr: .inf\n", "inf.yaml"))
    assert "inf.yaml" in msg and "key 'train.g_lr': expected a finite number" in msg


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    # PyYAML alone keeps the second 'train:' and drops total_kimg without a word.
    path = write(tmp_path, "model: stylegan2\ntrain:\n  total_kimg: 1\nloss:\n  r1_gamma: 1\ntrain:\n  batch_size: 4\n")
    msg = error_of(path)
    assert path in msg and "key 'train' appears twice in one mapping (first on line 2)" in msg and "line 6" in msg
    msg = error_of(write(tmp_path, "train:\n  g_lr: 0.001\n  g_lr: 0.002\n", "inner.yaml"))
    assert "key 'g_lr' appears twice" in msg


def test_an_empty_config_file_is_refused_rather_than_training_the_defaults(tmp_path):
    for text in ("", "# nothing but a comment\n"):
        msg = error_of(write(tmp_path, text, "empty.yaml"))
        assert "empty.yaml" in msg and "the file is empty" in msg


# ---------------------------------------------------------------- values the data makes wrong
@pytest.mark.parametrize("model, key", [("stylegan2", "generator"), ("stylegan2", "discriminator"),
                                        ("progan", "generator"), ("progan", "discriminator")])
def test_a_channel_base_below_the_resolution_names_the_key_and_file(tmp_path, model, key):
    # Channels are channel_base // resolution: below the data's 32x32 the last layers would have none.
    from bigtrain.train.loop import Trainer
    path = write(tmp_path, f"model: {model}\nrun: {{dir: {tmp_path / 'run'}}}\n"
                           f"data: {{source: synthetic, resolution: 32}}\n{key}: {{channel_base: 16}}\n")
    with pytest.raises(ConfigError) as ei:
        Trainer(load(path), config_source=path)
    msg = str(ei.value)
    assert f"key '{key}.channel_base': 16 gives no channels at 32x32" in msg and "at least 32" in msg
    assert path in msg
