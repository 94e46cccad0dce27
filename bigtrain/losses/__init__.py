"""Losses compute and return terms; they never call backward."""
from .adversarial import ADVERSARIAL_TYPES, d_loss, g_loss
from .augment import AdaController, AugmentConfig, AugmentPipe
from .gan import GANLoss, LossOutput
from .regularizers import gradient_penalty, path_lengths, r1_penalty

__all__ = ["ADVERSARIAL_TYPES", "AdaController", "AugmentConfig", "AugmentPipe", "GANLoss", "LossOutput", "d_loss", "g_loss", "gradient_penalty",
           "path_lengths", "r1_penalty"]
