"""bigtrain import: NVlabs pickles (in their record layout, written by tests/nvlabs_layout.py) read
with nothing in them run, mapped onto bigtrain's StyleGAN2, written as an export folder."""
import dataclasses
import os
import pickle

import pytest
import torch

from bigtrain.models.stylegan2.nvlabs_pickle import ForeignPickleError, read_pickle
from bigtrain.export import ExportError, load_generator
from bigtrain.export.importer import import_nvlabs
from bigtrain.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from bigtrain.models.stylegan2.nvlabs import read_discriminator, read_generator
from tests.nvlabs_layout import _nvlabs_names, record, write_nvlabs_pickle


def _nets(c_dim=0, conv_clamp=256.0):
    torch.manual_seed(0)
    G = StyleGAN2Generator(StyleGAN2Generator.Config(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                                                     channel_max=8, conv_clamp=conv_clamp), 16, 3, c_dim)
    D = StyleGAN2Discriminator(StyleGAN2Discriminator.Config(channel_base=64, channel_max=8, mbstd_group_size=2,
                                                             mapping_layers=8, mapping_lr_mul=0.01,
                                                             conv_clamp=conv_clamp), 16, 3, c_dim)
    with torch.no_grad():  # away from the initialisation: noise strengths, w_avg, biases nonzero
        for net in (G, D):
            for n, t in list(net.named_parameters()) + list(net.named_buffers()):
                if "resample_filter" not in n:
                    t.add_(torch.randn_like(t) * 0.3)
    return G.eval(), D.eval()


@pytest.mark.parametrize("c_dim", [0, 3])
def test_import_reproduces_the_networks(tmp_path, c_dim):
    G, D = _nets(c_dim)
    pkl = tmp_path / "network-snapshot-000100.pkl"
    write_nvlabs_pickle(pkl, G, D, num_fp16_res=2)
    data = read_pickle(str(pkl))
    g = read_generator(data["G_ema"])
    assert g.num_fp16_res == 2 and g.config == G.cfg
    z = torch.randn(4, 8)
    c = torch.eye(3)[[0, 1, 2, 0]] if c_dim else None
    g_net = g.build()
    for psi in (1.0, 0.7):
        want = G(z, c, truncation_psi=psi, noise_mode="const")
        assert torch.equal(g_net(z, c, truncation_psi=psi, noise_mode="const"), want)
    d = read_discriminator(data["D"])
    unused = {} if c_dim else {"mapping_layers": 2, "mapping_lr_mul": 1.0}  # nothing is built from them
    assert d.config == dataclasses.replace(D.cfg, **unused)
    img = torch.randn(4, 3, 16, 16)
    assert torch.equal(d.build()(img, c), D(img, c))
    # The export folder: what generate, export and load_generator read.
    config = import_nvlabs(str(pkl), str(tmp_path / "out"), printer=lambda s: None)
    G2, cfg = load_generator(str(tmp_path / "out"))
    assert cfg["source"]["network"] == "G_ema" and cfg["source"]["num_fp16_res"] == 2 and config["c_dim"] == c_dim
    assert torch.equal(G2(z, c, truncation_psi=0.7, noise_mode="const"), G(z, c, truncation_psi=0.7, noise_mode="const"))
    with pytest.raises(ExportError, match="is an export folder already"):  # imported twice by mistake
        import_nvlabs(str(tmp_path / "out"), str(tmp_path / "again"), printer=lambda s: None)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickles_are_refused_with_nothing_run(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Payload(marker)}))
    with pytest.raises(ForeignPickleError, match=r"asks for posix\.system"):
        read_pickle(str(bad))
    # A storage whose bytes are a pickle with a payload (NVlabs' loader would torch.load them unrestricted).
    class Storage:
        def __reduce__(self):
            import torch.storage
            import io
            b = io.BytesIO()
            torch.save(_Payload(marker), b)
            return (torch.storage._load_from_bytes, (b.getvalue(),))
    bad.write_bytes(pickle.dumps({"G_ema": Storage()}))
    with pytest.raises(ForeignPickleError, match="not plain data"):
        read_pickle(str(bad))
    # Source text in a record is carried, never run: the import goes on and nothing is touched.
    G, _ = _nets()
    src = f"import os\nos.system('touch {marker}')\n"
    with _nvlabs_names():
        from tests.nvlabs_layout import generator_record
        rec = generator_record(G)
        rec.meta["module_src"] = src
        bad.write_bytes(pickle.dumps({"G_ema": rec}))
    import_nvlabs(str(bad), str(tmp_path / "out"), printer=lambda s: None)
    assert not marker.exists()
    assert read_pickle(str(bad))["G_ema"].module_src == src


def test_what_bigtrain_cannot_represent_is_named(tmp_path):
    G, _ = _nets()
    pkl = tmp_path / "g.pkl"
    write_nvlabs_pickle(pkl, G, architecture="resnet")
    with pytest.raises(ForeignPickleError, match="synthesis architecture 'resnet'"):
        read_generator(read_pickle(str(pkl))["G_ema"])
    write_nvlabs_pickle(pkl, G, extra_kwargs={"spectral_norm": True})
    with pytest.raises(ForeignPickleError, match="setting 'spectral_norm'"):
        read_generator(read_pickle(str(pkl))["G_ema"])
    # StyleGAN3: a synthesis network with an input layer.
    with _nvlabs_names():
        sg3 = record("Generator", modules={"mapping": record("MappingNetwork"), "synthesis": record(
            "SynthesisNetwork", modules={"input": record("SynthesisInput"), "L0_36_512": record("SynthesisLayer")})},
            z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3)
        pkl.write_bytes(pickle.dumps({"G_ema": sg3}))
    with pytest.raises(ForeignPickleError, match="StyleGAN3"):
        import_nvlabs(str(pkl), str(tmp_path / "o"), printer=lambda s: None)
    assert not (tmp_path / "o").exists()
    # Not a dict of networks, a torch.save file, garbage.
    pkl.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ForeignPickleError, match="not the dict of networks"):
        read_pickle(str(pkl))
    torch.save({"a": torch.zeros(1)}, pkl)
    with pytest.raises(ForeignPickleError, match="not a readable NVlabs pickle|persistent id"):
        read_pickle(str(pkl))


def test_numpy_values_are_decoded_not_constructed(tmp_path):
    import numpy as np
    pkl = tmp_path / "n.pkl"
    pkl.write_bytes(pickle.dumps({"a": np.arange(6.0).reshape(2, 3), "g": np.float64(0.25)}))
    data = read_pickle(str(pkl))
    assert np.array_equal(data["a"].array, np.arange(6.0).reshape(2, 3)) and data["g"] == 0.25
    pkl.write_bytes(pickle.dumps({"a": np.array([print], dtype=object)}))
    with pytest.raises(ForeignPickleError, match="numpy dtype 'O8'"):
        read_pickle(str(pkl))


def test_build_on_a_tensor_is_refused(tmp_path):
    """A BUILD after a tensor rebuild would call Tensor.__setstate__ (set_ past the size checks)."""
    t = torch.zeros(4)

    class Grown:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (t.storage(), 0, (4,), (1,), False, {}),
                    (t.storage(), 0, (1000000,), (1,)))

    pkl = tmp_path / "g.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": Grown()}))
    with pytest.raises(ForeignPickleError, match=r"BUILD"):
        read_pickle(str(pkl))


def test_malformed_records_and_tensors_are_one_line_errors(tmp_path):
    """A record that is its own submodule, and tensors with a negative offset or a size and stride of
    different lengths: each a ForeignPickleError, not a RecursionError or RuntimeError traceback."""
    mods: dict = {}
    with _nvlabs_names():
        loop = record("training.networks.Generator", modules=mods)
        loop.meta["state"]["_modules"] = mods
        mods["synthesis"] = loop
        blob = pickle.dumps({"m": mods, "G_ema": loop})
    pkl = tmp_path / "loop.pkl"
    pkl.write_bytes(blob)
    with pytest.raises(ForeignPickleError, match="'synthesis' contains itself"):
        read_pickle(str(pkl))["G_ema"].tensors()

    t = torch.zeros(4)
    for args in ((-1, (4,), (1,)), (0, (2, 2), (1,))):
        class Bad:
            def __reduce__(self, a=args):
                return (torch._utils._rebuild_tensor_v2, (t.storage(), *a, False, {}))

        pkl.write_bytes(pickle.dumps({"G_ema": Bad()}))
        with pytest.raises(ForeignPickleError, match="non-negative integers of matching lengths"):
            read_pickle(str(pkl))
