"""NVlabs StyleGAN2 networks (stylegan2-ada-pytorch ``training/networks.py``, stylegan3
``training/networks_stylegan2.py``) mapped onto bigtrain's StyleGAN2: settings and weights.

The records come from bigtrain/models/stylegan2/nvlabs_pickle.py, which runs nothing from the file. Each setting
is read from what the network was built with: the value a layer stored (its attribute dict) where
it keeps one, else the init argument, else NVlabs' default. A setting bigtrain's StyleGAN2 cannot
represent (another architecture or activation, a label embedding of another width, ...) is a
:class:`ForeignPickleError` naming it. The weights are renamed to bigtrain's layout and checked
against a network built from the settings, tensor by tensor.
"""
from __future__ import annotations

import dataclasses
import re

import torch

from bigtrain.models.stylegan2.nvlabs_pickle import ForeignPickleError, Record
from bigtrain.ops import setup_filter

from .discriminator import StyleGAN2Discriminator
from .generator import StyleGAN2Generator

# Init arguments bigtrain reads (a), or knows not to matter for the weights or the images (i).
FAMILY = "stylegan2"  # the family every network of an NVlabs StyleGAN2 pickle becomes

_G_KWARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
_SYNTHESIS_KWARGS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter",
                     "use_noise", "activation", "kernel_size",
                     "fp16_channels_last", "fused_modconv_default", "channels_last"}  # last three: speed only
_MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_D_KWARGS = {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
             "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"}
_D_BLOCK_KWARGS = {"activation", "resample_filter", "fp16_channels_last", "freeze_layers"}  # freeze_layers: training only
_D_EPILOGUE_KWARGS = {"mbstd_group_size", "mbstd_num_channels", "activation"}


@dataclasses.dataclass
class Imported:
    """One network read from an NVlabs pickle, in bigtrain's terms."""
    net: str  # "G_ema", "G" or "D"
    config: object  # StyleGAN2Generator.Config or StyleGAN2Discriminator.Config
    resolution: int
    channels: int
    c_dim: int
    num_fp16_res: int  # NVlabs' mixed-precision setting: the N highest resolutions in fp16
    state: dict[str, torch.Tensor]  # bigtrain's names, float32

    def build(self) -> torch.nn.Module:
        """The bigtrain network with these weights (float32, CPU, eval mode)."""
        cls = StyleGAN2Generator if self.net != "D" else StyleGAN2Discriminator
        net = cls(self.config, self.resolution, self.channels, self.c_dim)
        expected = net.state_dict()
        _check_names(self.net, expected, self.state)
        net.load_state_dict(self.state)
        return net.eval()


def is_stylegan3(rec: Record) -> bool:
    syn = rec.child("synthesis")
    return syn is not None and (syn.child("input") is not None or syn.class_name != "SynthesisNetwork"
                                or any(isinstance(m, Record) and m.class_name == "SynthesisInput"
                                       for m in (syn.state.get("_modules") or {}).values()))


def read_generator(rec: Record, net: str = "G_ema") -> Imported:
    """An NVlabs StyleGAN2 ``Generator`` record -> bigtrain's settings and weights."""
    if not isinstance(rec, Record) or rec.class_name != "Generator":
        raise ForeignPickleError(f"'{net}' is {_what(rec)}, not an NVlabs Generator")
    if is_stylegan3(rec):
        raise ForeignPickleError(f"'{net}' is a StyleGAN3 (alias-free, T or R) generator; bigtrain imports "
                                 f"StyleGAN2 generators only for now")
    mapping, synthesis = rec.child("mapping"), rec.child("synthesis")
    if mapping is None or synthesis is None:
        raise ForeignPickleError(f"'{net}' has no mapping or synthesis network")
    kw = rec.init_kwargs
    _known(kw, _G_KWARGS | _SYNTHESIS_KWARGS, f"{net} (Generator)")
    syn_kw = dict(kw.get("synthesis_kwargs") or {})
    syn_kw.update({k: v for k, v in kw.items() if k in _SYNTHESIS_KWARGS})  # stylegan3 passes them flat
    _known(syn_kw, _SYNTHESIS_KWARGS, f"{net} synthesis_kwargs")
    map_kw = dict(kw.get("mapping_kwargs") or {})
    _known(map_kw, _MAPPING_KWARGS, f"{net} mapping_kwargs")

    z_dim, c_dim, w_dim = (_int(rec, k, net) for k in ("z_dim", "c_dim", "w_dim"))
    resolution, channels = _int(rec, "img_resolution", net), _int(rec, "img_channels", net)
    tensors = rec.tensors()
    blocks = [synthesis.child(f"b{r}") for r in _attr(synthesis, "block_resolutions", net)]
    if any(b is None for b in blocks):
        raise ForeignPickleError(f"'{net}': a synthesis block named in block_resolutions is missing")
    layers = [lay for b in blocks for lay in (b.child("conv0"), b.child("conv1")) if lay is not None]
    for b in blocks:
        _require(_attr(b, "architecture", net) == "skip", net, f"synthesis architecture "
                 f"{b.state.get('architecture')!r}", "bigtrain's StyleGAN2 generator is 'skip'")
    conv_clamps = {lay.state.get("conv_clamp") for lay in layers}
    noises = {bool(lay.state.get("use_noise", True)) for lay in layers}
    _require(len(conv_clamps) == 1 and len(noises) == 1, net, "per-layer conv_clamp or use_noise",
             "bigtrain uses one value for the whole network")
    for lay in layers:
        _require(lay.state.get("activation", "lrelu") == "lrelu", net,
                 f"synthesis activation {lay.state.get('activation')!r}", "bigtrain's is 'lrelu'")
    k = tensors["synthesis.b4.conv1.weight"].shape[-1] if "synthesis.b4.conv1.weight" in tensors else 3
    _require(k == 3, net, f"synthesis kernel_size {k}", "bigtrain's StyleGAN2 uses 3")

    fcs = [mapping.child(f"fc{i}") for i in range(_int(mapping, "num_layers", net))]
    if any(fc is None for fc in fcs):
        raise ForeignPickleError(f"'{net}': a mapping layer named by num_layers is missing")
    for fc in fcs:
        _require(fc.state.get("activation") == "lrelu", net, f"mapping activation {fc.state.get('activation')!r}",
                 "bigtrain's is 'lrelu'")
    lr_mul = float(fcs[0].state.get("bias_gain", map_kw.get("lr_multiplier", 0.01)))
    w_avg_beta = mapping.state.get("w_avg_beta", map_kw.get("w_avg_beta"))
    _require(isinstance(w_avg_beta, float) and 0 <= w_avg_beta < 1, net, f"mapping w_avg_beta {w_avg_beta!r}",
             "bigtrain tracks w_avg for truncation (a number in [0, 1))")
    for key in ("embed_features", "layer_features"):
        _require(map_kw.get(key) in (None, w_dim), net, f"mapping {key} {map_kw.get(key)!r}",
                 f"bigtrain's mapping layers are w_dim ({w_dim}) wide")

    filt = _filter(syn_kw.get("resample_filter", [1, 3, 3, 1]), net)
    cfg = StyleGAN2Generator.Config(
        z_dim=z_dim, w_dim=w_dim, mapping_layers=len(fcs), mapping_lr_mul=lr_mul, w_avg_beta=float(w_avg_beta),
        channel_base=int(syn_kw.get("channel_base", 32768)), channel_max=int(syn_kw.get("channel_max", 512)),
        conv_clamp=_clamp(conv_clamps.pop()), use_noise=noises.pop(), resample_filter=filt)
    state = {}
    for name, t in tensors.items():
        new = re.sub(r"^mapping\.fc(\d+)\.", r"mapping.layers.\1.", name)
        new = re.sub(r"^synthesis\.b(\d+)\.", r"synthesis.blocks.b\1.", new)
        if re.fullmatch(r"synthesis\.blocks\.b\d+\.conv0\.weight", new):
            # NVlabs' upsampling layers apply their weight as a convolution (flip_weight=False),
            # bigtrain's as a correlation, like every other layer: the same filter, mirrored.
            t = t.flip([2, 3])
        if new.endswith("noise_strength") and t.dim() == 0:
            t = t.reshape(1)  # bigtrain keeps it 1-d (DeepSpeed cannot broadcast 0-d parameters)
        if new.endswith("resample_filter"):
            t = _same_filter(t, filt, net, name)
        state[new] = t.float()
    num_fp16 = sum(bool(b.state.get("use_fp16")) for b in blocks)
    return Imported(net, cfg, resolution, channels, c_dim, num_fp16, state)


def read_discriminator(rec: Record) -> Imported:
    """An NVlabs StyleGAN2 ``Discriminator`` record -> bigtrain's settings and weights."""
    net = "D"
    if not isinstance(rec, Record) or rec.class_name != "Discriminator":
        raise ForeignPickleError(f"'D' is {_what(rec)}, not an NVlabs Discriminator")
    kw = rec.init_kwargs
    _known(kw, _D_KWARGS, "D (Discriminator)")
    block_kw, map_kw, epi_kw = (dict(kw.get(k) or {}) for k in ("block_kwargs", "mapping_kwargs", "epilogue_kwargs"))
    _known(block_kw, _D_BLOCK_KWARGS, "D block_kwargs")
    _known(map_kw, _MAPPING_KWARGS, "D mapping_kwargs")
    _known(epi_kw, _D_EPILOGUE_KWARGS, "D epilogue_kwargs")
    c_dim, resolution, channels = (_int(rec, k, net) for k in ("c_dim", "img_resolution", "img_channels"))
    blocks = [rec.child(f"b{r}") for r in _attr(rec, "block_resolutions", net)]
    epilogue = rec.child("b4")
    if any(b is None for b in blocks) or epilogue is None:
        raise ForeignPickleError("'D': a block named in block_resolutions, or the 4x4 epilogue, is missing")
    for b in blocks:
        _require(_attr(b, "architecture", net) == "resnet", net, f"architecture {b.state.get('architecture')!r}",
                 "bigtrain's StyleGAN2 discriminator is 'resnet'")
    convs = [c for b in blocks for c in (b.child("fromrgb"), b.child("conv0"), b.child("conv1")) if c is not None]
    convs.append(epilogue.child("conv"))
    clamps = {c.state.get("conv_clamp") for c in convs if c is not None}
    _require(len(clamps) == 1, net, "per-layer conv_clamp", "bigtrain uses one value for the whole network")
    for c in convs + [epilogue.child("fc")]:
        if c is not None:
            _require(c.state.get("activation", "lrelu") == "lrelu", net, f"activation {c.state.get('activation')!r}",
                     "bigtrain's is 'lrelu'")
    mbstd = epilogue.child("mbstd")
    group = mbstd.state.get("group_size") if mbstd is not None else epi_kw.get("mbstd_group_size", 4)
    num_ch = mbstd.state.get("num_channels") if mbstd is not None else 0
    _require(isinstance(group, int) and group >= 1, net, f"mbstd_group_size {group!r}",
             "bigtrain needs a group size (a whole number >= 1)")
    cmap_dim = epilogue.state.get("cmap_dim", 0) or None
    base, cmax = int(kw.get("channel_base", 32768)), int(kw.get("channel_max", 512))
    if cmap_dim == min(base // 4, cmax):
        cmap_dim = None  # bigtrain's spelling of "channels at 4x4", NVlabs' default
    mapping_layers, mapping_lr = 2, 1.0
    if c_dim > 0:
        mapping = rec.child("mapping")
        if mapping is None:
            raise ForeignPickleError("'D' is conditional but has no mapping network")
        mapping_layers = _int(mapping, "num_layers", net)
        fc0 = mapping.child("fc0")
        mapping_lr = float(fc0.state.get("bias_gain", 0.01)) if fc0 is not None else 0.01
        for key in ("embed_features", "layer_features"):
            _require(map_kw.get(key) is None, net, f"mapping {key} {map_kw.get(key)!r}",
                     "bigtrain's label embedding is cmap_dim wide")
    filt = _filter(block_kw.get("resample_filter", [1, 3, 3, 1]), net)
    cfg = StyleGAN2Discriminator.Config(
        channel_base=base, channel_max=cmax, mbstd_group_size=group, mbstd_num_channels=int(num_ch), cmap_dim=cmap_dim,
        mapping_layers=mapping_layers, mapping_lr_mul=mapping_lr, conv_clamp=_clamp(clamps.pop()),
        resample_filter=filt)
    state = {}
    for name, t in rec.tensors().items():
        if re.fullmatch(r"b\d+\.resample_filter", name):  # the block's own copy; bigtrain's layers hold theirs
            _same_filter(t, filt, net, name)
            continue
        new = re.sub(r"^mapping\.fc(\d+)\.", r"mapping.layers.\1.", name)
        if not new.startswith("b4."):
            new = re.sub(r"^b(\d+)\.", r"blocks.b\1.", new)
        if new.endswith("resample_filter"):
            t = _same_filter(t, filt, net, name)
        state[new] = t.float()
    num_fp16 = sum(bool(b.state.get("use_fp16")) for b in blocks)
    return Imported(net, cfg, resolution, channels, c_dim, num_fp16, state)


def _check_names(net: str, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing:
        raise ForeignPickleError(f"'{net}' lacks tensor '{missing[0]}' that bigtrain's StyleGAN2 with its "
                                 f"settings has ({len(missing)} missing)")
    if extra:
        raise ForeignPickleError(f"'{net}' has tensor '{extra[0]}' that bigtrain's StyleGAN2 with its settings "
                                 f"does not ({len(extra)} extra)")
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise ForeignPickleError(f"'{net}' tensor '{k}' has shape {tuple(got[k].shape)}; bigtrain's StyleGAN2 "
                                     f"with its settings has {tuple(v.shape)}")


def _known(kw: dict, allowed: set[str], where: str) -> None:
    bad = sorted(k for k in kw if k not in allowed)
    if bad:
        raise ForeignPickleError(f"{where} has setting '{bad[0]}', which bigtrain's StyleGAN2 cannot represent")


def _require(ok: bool, net: str, what: str, why: str) -> None:
    if not ok:
        raise ForeignPickleError(f"'{net}' has {what}, which bigtrain's StyleGAN2 cannot represent ({why})")


def _attr(rec: Record, key: str, net: str):
    if key not in rec.state:
        raise ForeignPickleError(f"'{net}': {rec.class_name} has no '{key}'")
    return rec.state[key]


def _int(rec: Record, key: str, net: str) -> int:
    v = _attr(rec, key, net)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ForeignPickleError(f"'{net}': {rec.class_name}.{key} is {v!r}, not a whole number")
    return v


def _clamp(v) -> float | None:
    return None if v is None else float(v)


def _filter(taps, net: str) -> list[int]:
    ok = isinstance(taps, (list, tuple)) and 1 <= len(taps) <= 16 and all(isinstance(t, int) for t in taps)
    _require(ok, net, f"resample_filter {taps!r}", "bigtrain takes 1 to 16 integer taps")
    return list(taps)


def _same_filter(t: torch.Tensor, taps: list[int], net: str, name: str) -> torch.Tensor:
    """bigtrain's form of the filter (1-d, separable) after checking that ``t``, NVlabs' form (2-d
    below 8 taps), is the same filter."""
    want = setup_filter(taps)
    full = want if t.dim() == 1 else torch.outer(want, want)
    if tuple(t.shape) != tuple(full.shape) or not torch.allclose(t.float(), full, atol=1e-6):
        raise ForeignPickleError(f"'{net}' tensor '{name}' is not the filter its resample_filter {taps} gives")
    return want


def _what(v) -> str:
    return repr(v) if isinstance(v, Record) else f"a {type(v).__name__}"
