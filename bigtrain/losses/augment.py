"""Differentiable augmentation of every image D sees, real and generated alike (Zhao et al. 2020,
"Differentiable Augmentation for Data-Efficient GAN Training"). Reals and fakes get independent draws
from the same distribution of transforms, and gradients flow through them to G, so D cannot win on
details the transforms destroy and G is not pushed to reproduce the augmentations. Draws come from
the torch RNG (checkpointed), so resume stays exact.

AugmentPipe and AdaController implement adaptive discriminator augmentation (ADA; Karras et al. 2020,
"Training Generative Adversarial Networks with Limited Data"): one probability p for every transform,
raised or lowered from the sign of D's outputs on reals."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from bigtrain.config import require
from bigtrain.distributed.device import to_device
from bigtrain.ops import downsample2d, setup_filter, upsample2d

AUGMENTATIONS = ("translation", "cutout", "brightness", "contrast")


def diff_augment(x_NCHW: torch.Tensor, policy: list[str] | tuple[str, ...],
                 translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> torch.Tensor:
    """Apply each named augmentation with per-sample random parameters.

    Args:
        x_NCHW: images in about [-1, 1].
        policy: names from AUGMENTATIONS, applied in the given order.
        translation_ratio: max shift as a fraction of the image size (integer pixels, zero fill).
        cutout_ratio: side of the zeroed square as a fraction of the image size.
    Returns:
        Augmented images, same shape; differentiable w.r.t. x_NCHW.
    """
    for name in policy:
        if name == "translation":
            x_NCHW = _translate(x_NCHW, translation_ratio)
        elif name == "cutout":
            x_NCHW = _cutout(x_NCHW, cutout_ratio)
        elif name == "brightness":
            x_NCHW = x_NCHW + (torch.rand(x_NCHW.shape[0], 1, 1, 1, device=x_NCHW.device) - 0.5)
        elif name == "contrast":
            mean = x_NCHW.mean(dim=[1, 2, 3], keepdim=True)
            x_NCHW = (x_NCHW - mean) * (torch.rand(x_NCHW.shape[0], 1, 1, 1, device=x_NCHW.device) + 0.5) + mean
        else:
            raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTATIONS}")
    return x_NCHW


def _translate(x: torch.Tensor, ratio: float) -> torch.Tensor:
    N, C, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (N, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (N, 1, 1), device=x.device)
    # Gather from the zero-padded image: output (i, j) reads input (i - dy, j - dx).
    iy = torch.arange(H, device=x.device).view(1, H, 1) - dy + sy
    ix = torch.arange(W, device=x.device).view(1, 1, W) - dx + sx
    padded = F.pad(x, [sx, sx, sy, sy])
    n = torch.arange(N, device=x.device).view(N, 1, 1)
    return padded.permute(0, 2, 3, 1)[n, iy, ix].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero a square of side ratio * size per sample, centred anywhere (clipped at the edges)."""
    N, C, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    y0 = torch.randint(0, H, (N, 1, 1), device=x.device) - ch // 2
    x0 = torch.randint(0, W, (N, 1, 1), device=x.device) - cw // 2
    yy = torch.arange(H, device=x.device).view(1, H, 1)
    xx = torch.arange(W, device=x.device).view(1, 1, W)
    inside = (yy >= y0) & (yy < y0 + ch) & (xx >= x0) & (xx < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# ----------------------------------------------------------------------------
# ADA: adaptive discriminator augmentation.

# Transform names per group, in the order they are applied; the constructor takes one weight each.
ADA_GROUPS: dict[str, tuple[str, ...]] = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
}
ADA_TRANSFORMS: tuple[str, ...] = tuple(t for g in ADA_GROUPS.values() for t in g)

_RESAMPLE_TAPS = 12  # low-pass taps on the 2x grid (a Lanczos-3 kernel of the original grid)


def _lanczos_taps(taps: int) -> list[float]:
    """Lanczos kernel with a = taps / 4 original pixels, sampled at the half-pixel offsets of a 2x grid.

    Even ``taps`` put the samples at +-0.5, +-1.5, ... 2x pixels, so both polyphase halves are mirror images
    and (after normalisation) a constant stays exactly constant through upsample2d / downsample2d.
    """
    a = taps / 4

    def sinc(v: float) -> float:
        return 1.0 if v == 0 else math.sin(math.pi * v) / (math.pi * v)

    ts = [(k - (taps - 1) / 2) / 2 for k in range(taps)]  # offsets in original pixels
    return [sinc(t) * sinc(t / a) for t in ts]


def _reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices into a length-n axis, mirrored at the edge pixels (F.pad's 'reflect', repeated as needed)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _reflect_pad(x: torch.Tensor, px: int, py: int) -> torch.Tensor:
    """Reflection padding by any amount (F.pad's 'reflect' needs pad < size)."""
    H, W = x.shape[2], x.shape[3]
    if px > 0:
        x = x.index_select(3, _reflect_index(torch.arange(-px, W + px, device=x.device), W))
    if py > 0:
        x = x.index_select(2, _reflect_index(torch.arange(-py, H + py, device=x.device), H))
    return x


def _host_tensor(data, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Python numbers as a tensor on ``device`` (through :func:`to_device`, queued)."""
    return to_device(torch.tensor(data, dtype=dtype), device)


def _matrix(rows: list[list[torch.Tensor | float]], N: int, device: torch.device) -> torch.Tensor:
    """[N, k, k] from rows whose entries are [N] tensors or Python numbers (filled on the device)."""
    cols = [e.to(torch.float32).expand(N) if isinstance(e, torch.Tensor)
            else torch.full((N,), float(e), dtype=torch.float32, device=device) for row in rows for e in row]
    return torch.stack(cols, dim=1).view(N, len(rows), len(rows[0]))


def _translate2d(tx, ty, N, device):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], N, device)


def _scale2d(sx, sy, N, device):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], N, device)


def _rotate2d(cos, sin, N, device):
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], N, device)


class _GridSample(torch.autograd.Function):
    """Bilinear grid_sample, differentiable w.r.t. the image to any order (the grid is a constant).

    Its backward is the adjoint sampling (_GridSampleAdjoint), whose own backward is this op again, so
    R1 (gradient of D(aug(x)) w.r.t. x, then backprop through it) does not depend on torch having a
    double backward for grid_sampler_2d_backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, grid)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, grid = ctx.saved_tensors
        gx = _GridSampleAdjoint.apply(gy, x, grid) if ctx.needs_input_grad[0] else None
        return gx, None


class _GridSampleAdjoint(torch.autograd.Function):
    """Gradient of _GridSample w.r.t. its image: linear in gy (x only gives the shape and dtype)."""

    @staticmethod
    def forward(ctx, gy: torch.Tensor, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grid)
        # Enum values of aten's grid sampler: interpolation 0 = bilinear, padding 2 = reflection.
        gx, _ = torch.ops.aten.grid_sampler_2d_backward(gy, x, grid, 0, 2, False, [True, False])
        return gx

    @staticmethod
    def backward(ctx, ggx: torch.Tensor):
        (grid,) = ctx.saved_tensors
        return _GridSample.apply(ggx, grid) if ctx.needs_input_grad[0] else None, None, None


class AugmentPipe(torch.nn.Module):
    """ADA's augmentation pipe: every transform is applied per sample with probability ``p * weight``.

    Groups (ADA's "bgc" is all of them at weight 1, the default):

    * blit: x-flip (a random 0/1 flip when applied), rotation by a random multiple of 90 degrees,
      integer translation uniform in +-``xint_max`` of the image size;
    * geom: isotropic scaling 2**N(0, scale_std), pre-rotation by a uniform angle in +-pi*rotate_max,
      anisotropic scaling 2**N(0, aniso_std) on x and its inverse on y, post-rotation, fractional
      translation N(0, xfrac_std) of the image size. Each of the two rotations is applied with
      probability 1 - sqrt(1 - p*weight), so that some rotation happens with probability p*weight;
    * color: brightness + N(0, brightness_std), contrast 2**N(0, contrast_std), luma flip (a random 0/1
      when applied), hue rotation about the luma axis by a uniform angle in +-pi*hue_max, saturation
      2**N(0, saturation_std). Values are taken as they are (about [-1, 1], so contrast and luma flip
      act about 0).

    Blit and geom transforms compose into one 3x3 matrix per sample, applied in one step per sample:
    none for the identity; exact pixel gathering when the matrix maps pixel centres onto pixel centres
    (only blits drawn, square images); otherwise reflection padding, 2x upsampling with a 12-tap Lanczos
    low-pass, bilinear affine_grid / grid_sample, 2x downsampling. Colour transforms compose into one 4x4 matrix
    per sample applied to RGB; images with other than 3 channels (e.g. 1) get only brightness and contrast,
    the same for every channel.

    Draws come from torch's global CPU generator, whatever the images' device: the matrices are made on
    the host, where what to do with each sample is decided, and only the images' work runs on their
    device. On a GPU, ``forward`` waits for the device only in the first call after p changed (it reads
    p back), unless the writer said what it wrote (:meth:`note_p`, as the trainer does after ADA's
    adjustment); the matrices, constants and sample indices reach the device as queued copies from
    pinned memory.

    ``p`` is a float32 buffer of shape [] (in state_dict); set it in place, ``pipe.p.copy_(...)`` or
    ``fill_`` (not through ``.data``, whose writes the pipe does not see).
    """

    def __init__(self, xflip: float = 1, rotate90: float = 1, xint: float = 1,
                 scale: float = 1, rotate: float = 1, aniso: float = 1, xfrac: float = 1,
                 brightness: float = 1, contrast: float = 1, lumaflip: float = 1, hue: float = 1,
                 saturation: float = 1, *, xint_max: float = 0.125, scale_std: float = 0.2,
                 rotate_max: float = 1.0, aniso_std: float = 0.2, xfrac_std: float = 0.125,
                 brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1.0,
                 saturation_std: float = 1.0, p: float = 0.0) -> None:
        """
        Args:
            xflip ... saturation: per-transform weight multiplying p (bool works: False = off, True = 1).
            xint_max: max integer translation, fraction of the image size.
            scale_std, aniso_std, contrast_std, saturation_std: std of the log2 of the factor.
            rotate_max, hue_max: max angle as a fraction of pi.
            xfrac_std: std of the fractional translation, fraction of the image size.
            brightness_std: std of the added brightness.
            p: initial augmentation probability.
        """
        super().__init__()
        self.weights = {name: float(w) for name, w in zip(ADA_TRANSFORMS, (
            xflip, rotate90, xint, scale, rotate, aniso, xfrac,
            brightness, contrast, lumaflip, hue, saturation))}
        bad = {k: w for k, w in self.weights.items() if w < 0}
        if bad:
            raise ValueError(f"AugmentPipe: transform weights must be >= 0, got {bad}")
        self.xint_max, self.scale_std, self.rotate_max = float(xint_max), float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))
        self._p_seen: tuple[torch.Tensor, int, float] | None = None  # see _p_value
        f = setup_filter(_lanczos_taps(_RESAMPLE_TAPS))
        self.register_buffer("resample_filter", f, persistent=False)

    @classmethod
    def for_groups(cls, groups: str = "bgc", **kwargs) -> AugmentPipe:
        """A pipe with whole groups on: letters b (blit), g (geom), c (color), e.g. "bgc" or "bg".

        Args:
            groups: letters of the groups to enable; the others get weight 0.
            **kwargs: further constructor arguments (strengths, p).
        Returns:
            The AugmentPipe.
        """
        letters = {"b": "blit", "g": "geom", "c": "color"}
        if set(groups) - set(letters):
            raise ValueError(f"AugmentPipe.for_groups: unknown group letters in {groups!r}; use b, g, c")
        on = {t for letter in groups for t in ADA_GROUPS[letters[letter]]}
        return cls(**{t: float(t in on) for t in ADA_TRANSFORMS}, **kwargs)

    def extra_repr(self) -> str:
        on = [k if w == 1 else f"{k}={w:g}" for k, w in self.weights.items() if w > 0]
        return f"p={float(self.p):.4f}, transforms=[{', '.join(on)}]"

    def _p_value(self) -> float:
        """p as a Python number; read from the buffer (on a GPU, a host sync) only when the buffer is
        another tensor or was written in place since the last read (its version counter moved:
        ``copy_``, ``fill_``, ``load_state_dict``, ADA's adjustment)."""
        seen = self._p_seen
        if seen is None or seen[0] is not self.p or seen[1] != self.p._version:
            self._p_seen = seen = (self.p, self.p._version, float(self.p))
        return seen[2]

    def note_p(self, value: float) -> None:
        """The caller has just written ``value`` into p in place (exactly, as a float32 number: ADA's
        adjustment returns it), so the next call takes it without reading the buffer back."""
        self._p_seen = (self.p, self.p._version, float(value))

    # --- random draws -------------------------------------------------------------------------

    def _gate(self, name: str, p: float, N: int, device: torch.device) -> torch.Tensor | None:
        """[N] bool: which samples get transform ``name``; None when it is off."""
        prob = min(p * self.weights[name], 1.0)
        if prob <= 0:
            return None
        if name == "rotate":  # two independent rotations, together applied with probability prob
            prob = 1 - math.sqrt(1 - prob)
        return torch.rand(N, device=device) < prob

    def _geometry(self, p: float, N: int, H: int, W: int, device: torch.device) -> torch.Tensor | None:
        """[N, 3, 3] float32 matrices mapping output to input pixel positions (centred, x right, y down).

        Each transform T applied after the ones before composes as G_inv = G_inv @ inv(T); the drawn
        distributions are symmetric, so inv(T) is drawn directly. None when no transform is on.
        """
        G = None

        def then(M: torch.Tensor) -> None:
            nonlocal G
            G = M if G is None else G @ M

        mask = self._gate("xflip", p, N, device)
        if mask is not None:
            i = torch.randint(0, 2, (N,), device=device) * mask
            then(_scale2d(1 - 2 * i.float(), 1, N, device))
        mask = self._gate("rotate90", p, N, device)
        if mask is not None:
            k = torch.randint(0, 4, (N,), device=device) * mask
            cos = _host_tensor([1.0, 0.0, -1.0, 0.0], device)[k]  # exact: no cos(pi/2) residue
            sin = _host_tensor([0.0, 1.0, 0.0, -1.0], device)[k]
            then(_rotate2d(cos, sin, N, device))
        mask = self._gate("xint", p, N, device)
        if mask is not None:
            t = (torch.rand(N, 2, device=device) * 2 - 1) * self.xint_max * mask[:, None]
            then(_translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H), N, device))
        mask = self._gate("scale", p, N, device)
        if mask is not None:
            s = torch.exp2(torch.randn(N, device=device) * self.scale_std * mask)
            then(_scale2d(1 / s, 1 / s, N, device))
        for name in ("rotate", "aniso", "rotate"):  # pre-rotation, anisotropic scaling, post-rotation
            mask = self._gate(name, p, N, device)
            if mask is None:
                continue
            if name == "rotate":
                theta = (torch.rand(N, device=device) * 2 - 1) * (math.pi * self.rotate_max) * mask
                then(_rotate2d(torch.cos(theta), torch.sin(theta), N, device))
            else:
                s = torch.exp2(torch.randn(N, device=device) * self.aniso_std * mask)
                then(_scale2d(1 / s, s, N, device))
        mask = self._gate("xfrac", p, N, device)
        if mask is not None:
            t = torch.randn(N, 2, device=device) * self.xfrac_std * mask[:, None]
            then(_translate2d(-t[:, 0] * W, -t[:, 1] * H, N, device))
        return G

    def _color(self, p: float, N: int, C: int, device: torch.device) -> torch.Tensor | None:
        """[N, 4, 4] float32 colour matrices acting on [r, g, b, 1]; None when no transform is on.
        With C != 3 only brightness and contrast are drawn."""
        M = None

        def then(T: torch.Tensor) -> None:
            nonlocal M
            M = T if M is None else T @ M

        mask = self._gate("brightness", p, N, device)
        if mask is not None:
            b = torch.randn(N, device=device) * self.brightness_std * mask
            then(_matrix([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], N, device))
        mask = self._gate("contrast", p, N, device)
        if mask is not None:
            c = torch.exp2(torch.randn(N, device=device) * self.contrast_std * mask)
            then(_matrix([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], N, device))
        if C != 3:
            return M
        v = _host_tensor([1.0, 1.0, 1.0, 0.0], device) / math.sqrt(3)  # unit luma axis
        vv = torch.outer(v, v)
        I4 = torch.eye(4, device=device)
        mask = self._gate("lumaflip", p, N, device)
        if mask is not None:  # Householder reflection: negates the luma component
            i = (torch.randint(0, 2, (N,), device=device) * mask).float()
            then(I4 - 2 * vv * i[:, None, None])
        mask = self._gate("hue", p, N, device)
        if mask is not None:  # Rodrigues rotation about the luma axis
            theta = (torch.rand(N, device=device) * 2 - 1) * (math.pi * self.hue_max) * mask
            cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
            cross = torch.zeros(4, 4, device=device)
            cross[0, 1], cross[0, 2], cross[1, 2] = -v[2], v[1], -v[0]
            cross = cross - cross.T
            R = cos * I4 + sin * cross + (1 - cos) * vv
            R[:, 3, :] = I4[3]
            R[:, :, 3] = I4[:, 3]
            then(R)
        mask = self._gate("saturation", p, N, device)
        if mask is not None:  # scales the chroma (the part orthogonal to the luma axis)
            s = torch.exp2(torch.randn(N, device=device) * self.saturation_std * mask)[:, None, None]
            then(vv + (I4 - vv) * s + torch.diag(_host_tensor([0.0, 0, 0, 1], device)) * (1 - s))
        return M

    # --- application ----------------------------------------------------------------------------

    def _transform(self, x: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Apply the per-sample geometric matrices G (output -> input, centred pixels) to x.

        Per sample: identity matrices leave the image as it is; matrices that map pixel centres onto pixel
        centres (blits only, on square images) gather pixels exactly; the rest are resampled. So a
        sample's output depends only on its own draws. G is on the host (``forward`` draws it there):
        which samples move, how, and how far the padding must reach are known there, and nothing is
        read back from x's device.
        """
        N, C, H, W = x.shape
        host, device = G.device, x.device
        # Input pixel index read by output pixel (0, 0); with an integer linear part, an integer index
        # there means every output pixel centre reads an input pixel centre.
        src00 = (G[:, :2, :2] @ _host_tensor([0.5 - W / 2, 0.5 - H / 2], host) + G[:, :2, 2]
                 + _host_tensor([W / 2 - 0.5, H / 2 - 0.5], host))
        lin_and_shift = torch.cat([G[:, :2, :2].flatten(1), src00], dim=1)
        off_grid = (lin_and_shift - lin_and_shift.round()).abs().amax(dim=1)
        moved = (G - torch.eye(3, device=host)).abs().flatten(1).amax(dim=1)
        # Extent of the 2x output canvas (image plus the downsampling filter's margins d0, d1) in the
        # input, to size the reflection padding.
        taps = int(self.resample_filter.shape[0])
        d0 = (taps - 1) // 2
        d1 = taps - 2 - d0
        cx0, cx1 = -W / 2 - d0 / 2, W / 2 + d1 / 2
        cy0, cy1 = -H / 2 - d0 / 2, H / 2 + d1 / 2
        corners = _host_tensor([[cx0, cx1, cx0, cx1], [cy0, cy0, cy1, cy1]], host)
        need = (G[:, :2, :2] @ corners + G[:, :2, 2:]).abs().amax(dim=2) - _host_tensor([W / 2, H / 2], host)
        stats = torch.cat([moved[:, None], off_grid[:, None], need], dim=1).tolist()
        blit = [i for i, s in enumerate(stats) if s[0] > 0 and s[1] < 1e-4]
        resample = [i for i, s in enumerate(stats) if s[0] > 0 and s[1] >= 1e-4]
        if not blit and not resample:
            return x
        out = x
        if blit:
            idx = _host_tensor(blit, host, torch.long)
            Gb, s0, idx = to_device(G[idx], device), to_device(src00[idx], device), to_device(idx, device)
            j = torch.arange(W, device=device).view(1, 1, W)
            k = torch.arange(H, device=device).view(1, H, 1)
            ix = (s0[:, 0, None, None] + Gb[:, 0, 0, None, None] * j + Gb[:, 0, 1, None, None] * k).round().long()
            iy = (s0[:, 1, None, None] + Gb[:, 1, 0, None, None] * j + Gb[:, 1, 1, None, None] * k).round().long()
            n = idx.view(-1, 1, 1)
            y = x.permute(0, 2, 3, 1)[n, _reflect_index(iy, H), _reflect_index(ix, W)].permute(0, 3, 1, 2)
            out = out.index_copy(0, idx, y)
        if resample:
            idx_host = _host_tensor(resample, host, torch.long)
            idx = to_device(idx_host, device)
            # Margin: where the canvas reaches, plus half a 2x pixel (bilinear) and the upsampling
            # filter's reach (taps / 4 original pixels); capped, beyond which grid_sample reflects.
            reach = 0.5 + taps / 4
            px = min(max(math.ceil(max(stats[i][2] for i in resample) + reach), 0), 4 * W)
            py = min(max(math.ceil(max(stats[i][3] for i in resample) + reach), 0), 4 * H)
            f = self.resample_filter.to(device=device, dtype=x.dtype)
            y = upsample2d(_reflect_pad(x.index_select(0, idx), px, py), f, up=2)
            # theta maps the canvas' normalised coordinates to the padded input's (affine_grid convention).
            Wo, Ho = 2 * W + d0 + d1, 2 * H + d0 + d1
            A_out = _host_tensor([[Wo / 4, 0, (d1 - d0) / 4], [0, Ho / 4, (d1 - d0) / 4], [0, 0, 1]], host)
            A_in = _host_tensor([[1 / (W / 2 + px), 0, 0], [0, 1 / (H / 2 + py), 0], [0, 0, 1]], host)
            theta = to_device((A_in @ G[idx_host] @ A_out)[:, :2].to(x.dtype), device)
            grid = F.affine_grid(theta, [len(resample), C, Ho, Wo], align_corners=False)
            y = downsample2d(_GridSample.apply(y, grid), f, down=2, padding=[-d0, -d1, -d0, -d1])
            out = out.index_copy(0, idx, y)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: [N, C, H, W] in about [-1, 1]; float32 (half / bfloat16 are computed in float32).
        Returns:
            Augmented images, same shape and dtype; the input itself when p == 0. Differentiable
            w.r.t. images to any order.
        """
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe: expected [N, C, H, W] images, got shape {tuple(images.shape)}")
        p = self._p_value()
        if p <= 0:
            return images
        N, C, H, W = images.shape
        device = images.device
        dtype = images.dtype
        # The draws and the per-sample matrices are made on the host (a few [N, 4, 4] tensors, from
        # torch's CPU generator), so choosing how to apply them needs nothing read back from a GPU;
        # they reach the images' device as queued copies.
        host = torch.device("cpu")
        no_autocast = (torch.autocast(device.type, enabled=False) if torch.amp.is_autocast_available(device.type)
                       else contextlib.nullcontext())  # the meta device (tests) has no autocast
        with no_autocast, torch.autocast("cpu", enabled=False):
            x = images if dtype in (torch.float32, torch.float64) else images.float()
            G = self._geometry(p, N, H, W, host)
            if G is not None:
                x = self._transform(x, G)
            M = self._color(p, N, C, host)
            if M is not None:
                M = to_device(M, device).to(x.dtype)
                if C == 3:
                    x = (M[:, :3, :3] @ x.reshape(N, 3, H * W) + M[:, :3, 3:]).reshape(N, C, H, W)
                else:  # brightness and contrast only: the same affine map on every channel
                    x = x * M[:, 0, 0].view(N, 1, 1, 1) + M[:, 0, 3].view(N, 1, 1, 1)
        return x.to(dtype)


class AdaController(torch.nn.Module):
    """Adjusts ADA's p from the overfitting heuristic r_t = E[sign(D(real))] (Karras et al. 2020).

    Call ``accumulate`` with D's real logits each D step, then ``adjust`` when ``due``: p moves by
    ``sign(r_t - target) * batch_size * interval / (speed_kimg * 1000)``, so it can sweep 0 -> 1 in
    ``speed_kimg`` thousand real images. The accumulators are a buffer (``acc``: float64 [sum of
    signs, count]), so they move with the module and are in its state_dict: resume mid-interval is
    exact.
    """

    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4,
                 p_init: float = 0.0, p_max: float = 1.0) -> None:
        """
        Args:
            target: r_t the controller steers to (p rises while r_t > target).
            speed_kimg: thousands of real images for p to move by 1.
            interval: D steps between adjustments.
            p_init: initial p, for the trainer to write into the pipe at the start.
            p_max: upper clamp of p.
        """
        super().__init__()
        if not 0 < speed_kimg:
            raise ValueError(f"AdaController: speed_kimg must be > 0, got {speed_kimg}")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"AdaController: interval must be an int >= 1, got {interval}")
        if not 0 <= p_init <= p_max <= 1:
            raise ValueError(f"AdaController: need 0 <= p_init <= p_max <= 1, got p_init={p_init}, p_max={p_max}")
        if not -1 <= target <= 1:
            raise ValueError(f"AdaController: target must be in [-1, 1], got {target}")
        self.target, self.speed_kimg, self.interval = float(target), float(speed_kimg), int(interval)
        self.p_init, self.p_max = float(p_init), float(p_max)
        self.register_buffer("acc", torch.zeros(2, dtype=torch.float64))

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add sum(sign(real_logits)) and their count to the device-side accumulators (no host sync).

        Args:
            real_logits: D's outputs on reals, any shape, on this module's device; detached here.
        """
        logits = real_logits.detach()
        self.acc[0] += logits.sign().sum(dtype=torch.float64)
        self.acc[1] += float(logits.numel())

    def due(self, step: int) -> bool:
        """Whether to adjust after D step ``step`` (0-based, counted since the start of training): true
        after every ``interval``-th step, i.e. once ``interval`` steps were accumulated.

        Args:
            step: index of the D step just taken (after its ``accumulate``).
        Returns:
            True on steps interval - 1, 2 * interval - 1, ...
        """
        return (step + 1) % self.interval == 0

    def adjust(self, p: torch.Tensor, batch_size: int,
               all_reduce: Callable[[torch.Tensor], object] | None = None) -> dict[str, float]:
        """Move p from the accumulated r_t, write it into ``p`` in place and reset the accumulators.

        Args:
            p: the pipe's p buffer (shape [], updated in place).
            batch_size: real images per D step over all ranks.
            all_reduce: optional in-place sum of a tensor over ranks, applied to the accumulators; call
                adjust on every rank when given (it is a collective).
        Returns:
            {"augment_p": new p, "augment_rt": r_t (nan when nothing was accumulated; p then stays)}.
        """
        acc = self.acc.clone()
        if all_reduce is not None:
            all_reduce(acc)
        sign_sum, count, p_old = torch.cat([acc, p.detach().reshape(1).to(acc)]).tolist()  # one sync
        self.acc.zero_()
        if count <= 0:
            return {"augment_p": p_old, "augment_rt": float("nan")}
        rt = sign_sum / count
        step = batch_size * self.interval / (self.speed_kimg * 1000)
        direction = (rt > self.target) - (rt < self.target)
        p_new = min(max(p_old + direction * step, 0.0), self.p_max)
        with torch.no_grad():
            p.fill_(p_new)
        return {"augment_p": float(torch.tensor(p_new, dtype=p.dtype)), "augment_rt": rt}

    def extra_repr(self) -> str:
        return f"target={self.target}, speed_kimg={self.speed_kimg:g}, interval={self.interval}"


@dataclasses.dataclass
class AugmentConfig:
    kind: Literal["none", "diffaugment", "ada", "fixed"] = "none"  # What D's inputs go through: none; diffaugment (the policy below); ada (ADA's pipe with p adjusted from D's outputs on reals); fixed (ADA's pipe at a constant p).
    policy: list[str] = dataclasses.field(default_factory=list)  # diffaugment: any of translation, cutout, brightness, contrast, in order.
    pipe: str = "bgc"  # ada, fixed: the transform groups, letters b (blit: x-flip, 90-degree rotations, integer translation), g (geometric), c (colour).
    p: float = 0.0  # fixed: the probability of every transform; ada: the p to start from.
    target: float = 0.6  # ada: the r_t = E[sign(D(real))] to steer to (p rises while r_t is above it).
    speed_kimg: float = 500.0  # ada: thousands of real images for p to move from 0 to 1 at the most.
    interval: int = 4  # ada: iterations between adjustments of p.
    p_max: float = 1.0  # ada: upper bound of p.

    def __post_init__(self):
        bad = [a for a in self.policy if a not in AUGMENTATIONS]
        require(not bad, "policy", self.policy, f"unknown augmentation(s) {bad}; choose from {list(AUGMENTATIONS)}")
        require(self.kind != "diffaugment" or self.policy, "policy", self.policy,
                "kind diffaugment needs at least one augmentation")
        require(self.kind == "diffaugment" or not self.policy, "policy", self.policy,
                f"is for kind diffaugment; kind is {self.kind}")
        require(bool(self.pipe) and not set(self.pipe) - set("bgc") and len(set(self.pipe)) == len(self.pipe),
                "pipe", self.pipe, "must be letters from b, g, c, each at most once (e.g. bgc)")
        require(0 <= self.p_max <= 1, "p_max", self.p_max, "must be in [0, 1]")
        require(0 <= self.p <= self.p_max, "p", self.p, f"must be in [0, p_max={self.p_max}]")
        require(-1 <= self.target <= 1, "target", self.target, "must be in [-1, 1]")
        require(self.speed_kimg > 0, "speed_kimg", self.speed_kimg, "must be > 0")
        require(self.interval >= 1, "interval", self.interval, "must be >= 1")

    def build(self) -> tuple[AugmentPipe | None, AdaController | None]:
        """The pipe (ada, fixed) and the controller (ada)."""
        if self.kind not in ("ada", "fixed"):
            return None, None
        pipe = AugmentPipe.for_groups(self.pipe, p=self.p)
        ada = (AdaController(self.target, self.speed_kimg, self.interval, self.p, self.p_max)
               if self.kind == "ada" else None)
        return pipe, ada
