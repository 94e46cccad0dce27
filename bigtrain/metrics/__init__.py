"""Sample-quality metrics: FID, KID, precision/recall on the standard InceptionV3 features,
computed over ranks and with cached real-data statistics."""
from .evaluate import MetricSpec, evaluate, fake_features, parse_metrics, real_features
from .inception import InceptionFeatures, find_inception

__all__ = ["InceptionFeatures", "MetricSpec", "evaluate", "fake_features", "find_inception", "parse_metrics", "real_features"]
