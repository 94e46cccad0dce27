"""BigGAN presets by resolution, from the paper's architecture tables (Brock et al. 2019,
appendix B): channel unit ch = 96 at 128 and up (64 at 32 and 64), the per-resolution channel
multipliers, self-attention at 64 (128 at 256), z split into 20-d chunks (z_dim 120 at 128, 140
at 256, 160 at 512), a 128-d shared class embedding. BigGAN-deep presets (``deep_res*``):
ch 128, z 128 not split, two bottleneck blocks per resolution. Batch sizes are the paper's
2048 (256 for the 32x32 preset, a CIFAR-scale setting)."""


def _preset(res: int, ch: int, g_mult: list[int], d_mult: list[int], attn: list[int], z_dim: int,
            batch: int, deep: bool = False) -> dict:
    return {
        "data": {"resolution": res},
        "generator": {"ch": ch, "ch_mult": g_mult, "attn_res": attn, "z_dim": z_dim, "deep": deep},
        "discriminator": {"ch": ch, "ch_mult": d_mult, "attn_res": attn, "deep": deep},
        "train": {"batch_size": batch},
    }


PRESETS = {
    "res32": _preset(32, 64, [4, 4, 4, 4], [4, 4, 4, 4], [], 128, 256),
    "res64": _preset(64, 64, [16, 16, 8, 4, 2], [1, 2, 4, 8, 16], [32], 120, 2048),
    "res128": _preset(128, 96, [16, 16, 8, 4, 2, 1], [1, 2, 4, 8, 16, 16], [64], 120, 2048),
    "res256": _preset(256, 96, [16, 16, 8, 8, 4, 2, 1], [1, 2, 4, 8, 8, 16, 16], [128], 140, 2048),
    "res512": _preset(512, 96, [16, 16, 8, 8, 4, 2, 1, 1], [1, 1, 2, 4, 8, 8, 16, 16], [64], 160, 2048),
    "deep_res128": _preset(128, 128, [16, 16, 8, 4, 2, 1], [1, 2, 4, 8, 16, 16], [64], 128, 2048, deep=True),
    "deep_res256": _preset(256, 128, [16, 16, 8, 8, 4, 2, 1], [1, 2, 4, 8, 8, 16, 16], [64], 128, 2048, deep=True),
    "deep_res512": _preset(512, 128, [16, 16, 8, 8, 4, 2, 1, 1], [1, 1, 2, 4, 8, 8, 16, 16], [64], 128, 2048,
                           deep=True),
}
