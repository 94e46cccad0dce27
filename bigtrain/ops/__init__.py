"""Low-level ops: FIR resampling, fused bias/activation, resampling and modulated convs.

Each op takes (or passes through) ``impl="auto" | "ref" | "cuda"``: the plain-PyTorch
reference or the CUDA kernels in kernels/ (see bigtrain/ops/_impl.py and docs/kernels.md).
"""

from bigtrain.ops.bias_act import ACTIVATIONS, ActSpec, bias_act
from bigtrain.ops.conv2d_resample import conv2d_resample
from bigtrain.ops.modconv import modulated_conv2d
from bigtrain.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from bigtrain.ops import _impl, kernel_check

_impl.set_parity_check(kernel_check.quick_parity)  # what impl="auto" runs before trusting a kernel

__all__ = [
    "ACTIVATIONS",
    "ActSpec",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "modulated_conv2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
