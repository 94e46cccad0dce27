"""Pickles in the record layout NVlabs' stylegan2-ada-pytorch writes, made with our own code (the suite
holds none of NVlabs'): each network a ``torch_utils.persistence._reconstruct_persistent_obj`` record
with its class name, a ``module_src`` text and its attribute dict (nn.Module internals, init
arguments as ``dnnlib.util.EasyDict``, numpy float64 gains), tensors pickled as torch pickles them.

``write_nvlabs_pickle`` turns a bigtrain StyleGAN2 G/D into that layout (NVlabs' names, 2-d filters
below 8 taps, 0-d noise strengths, mirrored weights in the upsampling convolutions).
"""
from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types

import numpy as np
import torch

MODULE_SRC = "# stands in for training/networks.py; bigtrain never runs this text\n"


class _Persistent:
    """Pickles as NVlabs' persistent objects do: (_reconstruct_persistent_obj, (meta,))."""

    def __init__(self, class_name: str, state: dict, module_src: str = MODULE_SRC):
        self.meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state}

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


@contextlib.contextmanager
def _nvlabs_names():
    """``torch_utils.persistence`` and ``dnnlib.util`` as modules of ours while pickling, so the file
    names the globals NVlabs' files name."""
    tu, pers, dn, util = (types.ModuleType(n) for n in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"))

    def _reconstruct_persistent_obj(meta):  # never called here: only its name goes in the file
        raise AssertionError

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    pers._reconstruct_persistent_obj, util.EasyDict = _reconstruct_persistent_obj, EasyDict
    saved = {n: sys.modules.get(n) for n in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    sys.modules.update({"torch_utils": tu, "torch_utils.persistence": pers, "dnnlib": dn, "dnnlib.util": util})
    try:
        yield EasyDict
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def record(class_name: str, params=None, buffers=None, modules=None, init_kwargs=None, module_src=MODULE_SRC, **attrs):
    state = {"training": False, "_parameters": collections.OrderedDict(params or {}),
             "_buffers": collections.OrderedDict(buffers or {}), "_non_persistent_buffers_set": set(),
             "_modules": collections.OrderedDict(modules or {}), "_init_args": (),
             "_init_kwargs": init_kwargs or {}, **attrs}
    return _Persistent(class_name, state, module_src)


def _nv_filter(f: torch.Tensor) -> torch.Tensor:
    return torch.outer(f, f) if f.numel() < 8 else f


def _fc(sd, prefix, activation, lr_mul):
    w = sd[prefix + "weight"]
    return record("FullyConnectedLayer", {"weight": w, "bias": sd[prefix + "bias"]}, activation=activation,
                  weight_gain=np.float64(lr_mul / np.sqrt(w.shape[1])), bias_gain=lr_mul)


def generator_record(G, num_fp16_res: int = 0, architecture: str = "skip", extra_kwargs=None, EasyDict=dict):
    """A bigtrain StyleGAN2Generator as an NVlabs Generator record."""
    cfg, sd = G.cfg, {k: v.detach().clone() for k, v in G.state_dict().items()}
    syn = G.synthesis
    fcs = {f"fc{i}": _fc(sd, f"mapping.layers.{i}.", "lrelu", cfg.mapping_lr_mul) for i in range(cfg.mapping_layers)}
    if G.c_dim:
        fcs = {"embed": _fc(sd, "mapping.embed.", "linear", 1.0), **fcs}
    mapping = record("MappingNetwork", buffers={"w_avg": sd["mapping.w_avg"]}, modules=fcs, z_dim=G.z_dim,
                     c_dim=G.c_dim, w_dim=G.w_dim, num_ws=G.num_ws, num_layers=cfg.mapping_layers,
                     w_avg_beta=cfg.w_avg_beta)
    blocks = {}
    res_list = syn.block_resolutions
    for res in res_list:
        p = f"synthesis.blocks.b{res}."
        layers = {}
        for name in ("conv0", "conv1"):
            if p + name + ".weight" not in sd:
                continue
            q = p + name + "."
            w = sd[q + "weight"].flip([2, 3]) if name == "conv0" else sd[q + "weight"]
            params = {"weight": w, "bias": sd[q + "bias"]}
            buffers = {"resample_filter": _nv_filter(sd[q + "resample_filter"])}
            if cfg.use_noise:
                params["noise_strength"] = sd[q + "noise_strength"].reshape([])
                buffers["noise_const"] = sd[q + "noise_const"]
            layers[name] = record("SynthesisLayer", params, buffers, {"affine": _fc(sd, q + "affine.", "linear", 1.0)},
                                  resolution=res, up=2 if name == "conv0" else 1, use_noise=cfg.use_noise,
                                  activation="lrelu", conv_clamp=cfg.conv_clamp, padding=1, act_gain=np.sqrt(2))
        q = p + "torgb."
        layers["torgb"] = record("ToRGBLayer", {"weight": sd[q + "weight"], "bias": sd[q + "bias"]}, None,
                                 {"affine": _fc(sd, q + "affine.", "linear", 1.0)}, conv_clamp=cfg.conv_clamp,
                                 weight_gain=np.float64(1 / np.sqrt(sd[q + "weight"].shape[1])))
        params = {"const": sd[p + "const"]} if res == 4 else {}
        blocks[f"b{res}"] = record("SynthesisBlock", params, {"resample_filter": _nv_filter(sd[p + "resample_filter"])},
                                   layers, resolution=res, architecture=architecture,
                                   use_fp16=res >= syn.img_resolution // 2 ** (num_fp16_res - 1) if num_fp16_res else False)
    synthesis = record("SynthesisNetwork", modules=blocks, w_dim=G.w_dim, img_resolution=syn.img_resolution,
                       img_channels=G.img_channels, block_resolutions=list(res_list), num_ws=G.num_ws)
    synthesis_kwargs = EasyDict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                num_fp16_res=num_fp16_res, conv_clamp=cfg.conv_clamp)
    kwargs = dict(z_dim=G.z_dim, c_dim=G.c_dim, w_dim=G.w_dim, img_resolution=syn.img_resolution,
                  img_channels=G.img_channels, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
                  synthesis_kwargs=synthesis_kwargs, **(extra_kwargs or {}))
    return record("Generator", modules={"mapping": mapping, "synthesis": synthesis}, init_kwargs=kwargs,
                  z_dim=G.z_dim, c_dim=G.c_dim, w_dim=G.w_dim, img_resolution=syn.img_resolution,
                  img_channels=G.img_channels, num_ws=G.num_ws)


def _conv(sd, q, activation, conv_clamp, bias=True):
    params = {"weight": sd[q + "weight"]}
    if bias:
        params["bias"] = sd[q + "bias"]
    return record("Conv2dLayer", params, {"resample_filter": _nv_filter(sd[q + "resample_filter"])},
                  activation=activation, conv_clamp=conv_clamp)


def discriminator_record(D, EasyDict=dict):
    """A bigtrain StyleGAN2Discriminator (not growing) as an NVlabs Discriminator record."""
    cfg, sd = D.cfg, {k: v.detach().clone() for k, v in D.state_dict().items()}
    mods = {}
    for res in D.block_resolutions:
        p = f"blocks.b{res}."
        layers = {}
        if p + "fromrgb.weight" in sd:
            layers["fromrgb"] = _conv(sd, p + "fromrgb.", "lrelu", cfg.conv_clamp)
        layers["conv0"] = _conv(sd, p + "conv0.", "lrelu", cfg.conv_clamp)
        layers["conv1"] = _conv(sd, p + "conv1.", "lrelu", cfg.conv_clamp)
        layers["skip"] = _conv(sd, p + "skip.", "linear", None, bias=False)
        mods[f"b{res}"] = record("DiscriminatorBlock", None, {"resample_filter": _nv_filter(sd[p + "conv1.resample_filter"])},
                                 layers, resolution=res, architecture="resnet", use_fp16=False)
    if D.c_dim:
        fcs = {"embed": _fc(sd, "mapping.embed.", "linear", 1.0)}
        fcs.update({f"fc{i}": _fc(sd, f"mapping.layers.{i}.", "lrelu", cfg.mapping_lr_mul) for i in range(cfg.mapping_layers)})
        mods["mapping"] = record("MappingNetwork", modules=fcs, num_layers=cfg.mapping_layers, w_avg_beta=None)
    epi = {"mbstd": record("MinibatchStdLayer", group_size=cfg.mbstd_group_size, num_channels=cfg.mbstd_num_channels),
           "conv": _conv(sd, "b4.conv.", "lrelu", cfg.conv_clamp), "fc": _fc(sd, "b4.fc.", "lrelu", 1.0),
           "out": _fc(sd, "b4.out.", "linear", 1.0)}
    mods["b4"] = record("DiscriminatorEpilogue", modules=epi, cmap_dim=D.b4.cmap_dim)
    kwargs = dict(c_dim=D.c_dim, img_resolution=D.img_resolution, img_channels=D.img_channels,
                  channel_base=cfg.channel_base, channel_max=cfg.channel_max, conv_clamp=cfg.conv_clamp,
                  block_kwargs=EasyDict(), mapping_kwargs=EasyDict(),
                  epilogue_kwargs=EasyDict(mbstd_group_size=cfg.mbstd_group_size))
    return record("Discriminator", modules=mods, init_kwargs=kwargs, c_dim=D.c_dim, img_resolution=D.img_resolution,
                  img_channels=D.img_channels, block_resolutions=list(D.block_resolutions))


def write_nvlabs_pickle(path, G, D=None, G_ema=None, **gen_kw) -> None:
    """G (and D, G_ema: default G) of bigtrain's StyleGAN2 as an NVlabs network-snapshot pickle."""
    with _nvlabs_names() as EasyDict:
        data = {"G": generator_record(G, EasyDict=EasyDict, **gen_kw),
                "D": discriminator_record(D, EasyDict=EasyDict) if D is not None else None,
                "G_ema": generator_record(G_ema or G, EasyDict=EasyDict, **gen_kw),
                "augment_pipe": None, "training_set_kwargs": EasyDict(path="data.zip", resolution=G.img_resolution)}
        with open(path, "wb") as f:
            pickle.dump(data, f)

