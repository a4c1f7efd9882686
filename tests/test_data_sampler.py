"""RASampler: single process (no process group) and per-rank behaviour with a world size."""

from __future__ import annotations

from collections import Counter

import pytest
import torch.distributed as dist

from bcos.data.sampler import RASampler
from bcos.errors import ConfigError


def test_single_process_without_process_group():
    assert not dist.is_initialized()
    sampler = RASampler(range(512), repetitions=3, seed=0)
    assert sampler.num_replicas == 1 and sampler.rank == 0
    indices = list(sampler)
    assert len(indices) == len(sampler) == 512
    # repeated augmentation: consecutive triples are the same image
    assert all(indices[i] == indices[i + 1] == indices[i + 2] for i in range(0, 510, 3))
    assert set(indices) <= set(range(512))


def test_epoch_reshuffles_deterministically():
    sampler = RASampler(range(300), repetitions=2, seed=5)
    first = list(sampler)
    assert first == list(RASampler(range(300), repetitions=2, seed=5))
    sampler.set_epoch(1)
    assert list(sampler) != first
    unshuffled = list(RASampler(range(300), repetitions=2, shuffle=False))
    assert unshuffled[:6] == [0, 0, 1, 1, 2, 2]


def test_ranks_split_the_repeated_indices():
    size, world, reps = 1000, 4, 3
    per_rank = [
        list(RASampler(range(size), num_replicas=world, rank=r, repetitions=reps, seed=1)) for r in range(world)
    ]
    expected_len = (size // 256 * 256) // world
    assert all(len(chunk) == expected_len for chunk in per_rank)
    # before truncation every rank holds a different copy of the same images
    full = [
        RASampler(range(size), num_replicas=world, rank=r, repetitions=reps, seed=1) for r in range(world)
    ]
    for sampler in full:
        sampler.num_selected_samples = sampler.num_samples
    counts = Counter(i for sampler in full for i in sampler)
    assert sum(counts.values()) == full[0].total_size
    assert all(count >= reps for count in counts.values()) and set(counts) == set(range(size))
    # copies of one image land on different ranks
    assert per_rank[0][0] == per_rank[1][0] == per_rank[2][0]


def test_tiny_data_sets_still_yield_samples():
    sampler = RASampler(range(40), repetitions=4)
    assert len(list(sampler)) == len(sampler) == 40
    assert len(list(RASampler(range(3), num_replicas=8, rank=7, repetitions=1))) == 1


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="rank"):
        RASampler(range(10), num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="ra_repetitions"):
        RASampler(range(10), repetitions=0)
