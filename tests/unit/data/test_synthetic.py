"""data.source: synthetic, the benchmark source: random images, no labels, nothing read from disk."""
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


def test_synthetic_source_has_no_labels_to_use():
    with pytest.raises(ValueError, match="synthetic.*use_labels"):
        open_data(DataConfig(source="synthetic", use_labels=True), seed=0)
