"""Fixed batch composition: counts per dataset, epoch coverage, disjoint ranks, pure in iteration."""

from __future__ import annotations

from collections import Counter

import pytest

from training.data.composition import BatchComposition


def test_each_batch_has_the_configured_counts():
    comp = BatchComposition(sizes=[5, 7, 3], counts=[1, 2, 1], seed=3)
    for it in range(20):
        batch = comp.batch(it)
        assert Counter(s.dataset for s in batch) == {0: 1, 1: 2, 2: 1}
        assert all(0 <= s.index < [5, 7, 3][s.dataset] for s in batch)


def test_every_sample_is_seen_once_per_epoch():
    comp = BatchComposition(sizes=[6], counts=[2], seed=1)
    seen = [s.index for it in range(3) for s in comp.batch(it)]
    assert sorted(seen) == list(range(6))
    next_epoch = [s.index for it in range(3, 6) for s in comp.batch(it)]
    assert sorted(next_epoch) == list(range(6)) and next_epoch != seen


def test_ranks_draw_disjoint_samples_and_cover_the_epoch_together():
    ranks = [BatchComposition(sizes=[8], counts=[2], seed=0, rank=r, world_size=2) for r in range(2)]
    per_rank = [[s.index for it in range(2) for s in comp.batch(it)] for comp in ranks]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(8))


def test_batches_depend_only_on_seed_and_iteration():
    a = BatchComposition(sizes=[9, 4], counts=[2, 1], seed=7)
    b = BatchComposition(sizes=[9, 4], counts=[2, 1], seed=7)
    assert [a.batch(i) for i in range(10)] == [b.batch(i) for i in reversed(range(10))][::-1]
    assert a.batch(5) != BatchComposition(sizes=[9, 4], counts=[2, 1], seed=8).batch(5)
    assert (a.rng(4, 1).random(3) == b.rng(4, 1).random(3)).all()


def test_bad_compositions_are_rejected():
    with pytest.raises(ValueError, match="one per-batch count per dataset"):
        BatchComposition(sizes=[3], counts=[1, 1])
    with pytest.raises(ValueError, match="dataset 1: 2 samples per batch from a dataset of 0"):
        BatchComposition(sizes=[3, 0], counts=[1, 2])
    with pytest.raises(ValueError, match="at least one sample"):
        BatchComposition(sizes=[3], counts=[0])
