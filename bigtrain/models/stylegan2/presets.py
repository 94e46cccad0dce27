"""StyleGAN2 presets by resolution. Channel counts follow min(channel_base / res, channel_max);
R1 gamma, batch and mapping depth follow the settings published with StyleGAN2 and
StyleGAN2-ADA (CIFAR-10 at 32, the "paper" configs at 256 and 512, FFHQ config F at 1024),
with the ADA heuristic gamma = 0.0002 * res^2 / batch between them."""


def _preset(res: int, channel_base: int, mapping_layers: int, r1_gamma: float, batch_size: int,
            pl_weight: float = 2.0, style_mixing_prob: float = 0.9) -> dict:
    return {
        "data": {"resolution": res},
        "generator": {"channel_base": channel_base, "channel_max": 512, "mapping_layers": mapping_layers},
        "discriminator": {"channel_base": channel_base, "channel_max": 512},
        "loss": {"r1_gamma": r1_gamma, "pl_weight": pl_weight, "style_mixing_prob": style_mixing_prob},
        "train": {"batch_size": batch_size},
    }


PRESETS = {
    "res32": _preset(32, 16384, 2, 0.01, 64, pl_weight=0.0, style_mixing_prob=0.0),
    "res64": _preset(64, 16384, 8, 0.05, 64),
    "res128": _preset(128, 16384, 8, 0.2, 64),
    "res256": _preset(256, 16384, 8, 1.0, 64),
    "res512": _preset(512, 32768, 8, 0.5, 64),
    "res1024": _preset(1024, 32768, 8, 10.0, 32),
}
