"""Equivalence with NVlabs' own code, where a checkout of it is at hand (the suite holds none of it):

    BIGTRAIN_NVLABS_REPO=/path/to/stylegan2-ada-pytorch pytest tests/integration/test_nvlabs_equivalence.py
    BIGTRAIN_NVLABS_REPO=/path/to/stylegan3 pytest tests/integration/test_nvlabs_equivalence.py

Networks are built by NVlabs' training/networks.py (or stylegan3's networks_stylegan2.py), moved away
from their initialisation, pickled as their training loop pickles snapshots, read by bigtrain (nothing
in the file run) and compared: G_ema images at truncation psi 1 and 0.7 (noise_mode const, float32)
within 1e-3, D logits likewise. Skipped without the variable (their code needs its own dependencies,
e.g. requests and setuptools' pkg_resources, importable)."""
import copy
import os
import pickle
import sys

import pytest
import torch

REPO = os.environ.get("BIGTRAIN_NVLABS_REPO")
pytestmark = pytest.mark.skipif(not REPO, reason="set BIGTRAIN_NVLABS_REPO to an NVlabs checkout")

CASES = [(0, 16, 3, 256, 2), (4, 32, 1, None, 0), (0, 8, 3, None, 1)]  # c_dim, res, channels, conv_clamp, fp16 res


@pytest.mark.parametrize("c_dim,res,channels,clamp,fp16", CASES)
def test_imported_networks_match_nvlabs_code(tmp_path, c_dim, res, channels, clamp, fp16):
    sys.path.insert(0, REPO)
    import dnnlib
    try:
        from training import networks_stylegan2 as nets  # stylegan3
        flat = True
    except ImportError:
        from training import networks as nets  # stylegan2-ada-pytorch
        flat = False
    from bigtrain.models.stylegan2.nvlabs_pickle import read_pickle
    from bigtrain.models.stylegan2.nvlabs import read_discriminator, read_generator

    torch.manual_seed(0)
    gk = dict(z_dim=24, c_dim=c_dim, w_dim=32, img_resolution=res, img_channels=channels,
              mapping_kwargs=dnnlib.EasyDict(num_layers=3))
    sk = dict(channel_base=512, channel_max=32, num_fp16_res=fp16, conv_clamp=clamp)
    G = nets.Generator(**gk, **sk) if flat else nets.Generator(**gk, synthesis_kwargs=dnnlib.EasyDict(sk))
    D = nets.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=channels, channel_base=512, channel_max=32,
                           num_fp16_res=fp16, conv_clamp=clamp, block_kwargs=dnnlib.EasyDict(),
                           mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=2))
    with torch.no_grad():
        for net in (G, D):
            for n, t in list(net.named_parameters()) + list(net.named_buffers()):
                if "resample_filter" not in n:
                    t.add_(torch.randn_like(t) * 0.3)
    data = {k: copy.deepcopy(v).eval().requires_grad_(False) for k, v in (("G", G), ("D", D), ("G_ema", G))}
    pkl = tmp_path / "network-snapshot.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(dict(data, augment_pipe=None, training_set_kwargs=dnnlib.EasyDict(resolution=res)), f)
    read = read_pickle(str(pkl))
    g, d = read_generator(read["G_ema"]).build(), read_discriminator(read["D"]).build()
    z = torch.randn(6, 24)
    c = torch.eye(c_dim)[torch.arange(6) % c_dim] if c_dim else None
    nv_c = c if c_dim else torch.zeros(6, 0)
    with torch.no_grad():
        for psi in (1.0, 0.7):
            want = data["G_ema"](z, nv_c, truncation_psi=psi, noise_mode="const", force_fp32=True)
            err = float((g(z, c, truncation_psi=psi, noise_mode="const") - want).abs().max())
            print(f"G_ema psi={psi} res={res} c_dim={c_dim}: max |diff| {err:.2e}")
            assert err < 1e-3
        img = torch.randn(6, channels, res, res)
        err = float((d(img, c) - data["D"](img, nv_c, force_fp32=True)).abs().max())
        print(f"D res={res} c_dim={c_dim}: max |diff| {err:.2e}")
        assert err < 1e-3
