"""data.source: synthetic, the benchmark source: random images (and, with use_labels, random labels), nothing
read from disk."""
from __future__ import annotations

import pytest
import torch

from bigtrain.data import DataConfig, open_data


def test_synthetic_source_cycles_a_seeded_pool_and_resumes():
    data = open_data(DataConfig(source="synthetic", resolution=8, max_images=5), seed=3)
    assert (data.resolution, data.channels, data.num_classes) == (8, 3, 0)
    a, labels = data.next(3)
    assert a.dtype == torch.uint8 and a.shape == (3, 3, 8, 8) and labels is None
    state = data.state_dict()
    b, _ = data.next(4)  # past the end of the 5-image pool: wraps round
    assert torch.equal(b[2:], a[:2])
    data.load_state_dict(state)
    assert torch.equal(data.next(4)[0], b)
    # Same seed, same pool; another seed, other images.
    assert torch.equal(open_data(DataConfig(source="synthetic", resolution=8, max_images=5), seed=3).next(3)[0], a)
    assert not torch.equal(open_data(DataConfig(source="synthetic", resolution=8, max_images=5), seed=4).next(3)[0], a)


def test_synthetic_source_with_labels_gives_each_image_a_fixed_label_among_1000_classes():
    data = open_data(DataConfig(source="synthetic", resolution=8, max_images=5, use_labels=True), seed=3)
    assert data.num_classes == 1000 and float(data.class_probs().sum()) == pytest.approx(1.0)
    images, labels = data.next(5)
    assert labels.dtype == torch.int64 and labels.shape == (5,) and 0 <= int(labels.min()) <= int(labels.max()) < 1000
    again_images, again_labels = data.next(5)  # the pool again: the same images with the same labels
    assert torch.equal(again_images, images) and torch.equal(again_labels, labels)
    # The images are those of the unlabelled pool with the same seed.
    assert torch.equal(open_data(DataConfig(source="synthetic", resolution=8, max_images=5), seed=3).next(5)[0], images)
