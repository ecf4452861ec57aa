"""The canonical order, the split over ranks x workers and the resume cursor (pure functions)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.data.partition import EpochOrder, Layout, remaining_after, slot_pieces, total


def positions(intervals):
    return [p for a, b in intervals for p in range(a, b)]


def rank_items(remaining, layout, rank, first=0):
    """Items (lists of canonical positions) one rank's DataLoader delivers, round robin."""
    per_worker = []
    for w in range(layout.workers):
        slot = rank * layout.workers + w
        start = layout.worker_steps(total(remaining), first, w)
        pos = positions(slot_pieces(remaining, layout, slot, start))
        b = layout.batch_size
        per_worker.append([pos[i : i + b] for i in range(0, len(pos), b)])
    out = []
    for group in itertools.zip_longest(*per_worker):
        out.extend(g for g in group if g is not None)
    return out


def test_order_is_a_permutation_made_of_blocks():
    order = EpochOrder(103, chunk_len=10, block_chunks=3, seed=5, epoch=2, shuffle=True)
    ids = order.ids(0, 103)
    assert sorted(ids.tolist()) == list(range(103))
    assert order.num_units == 4
    for u in range(order.num_units):
        lo, hi = int(order.offsets[u]), int(order.offsets[u + 1])
        chunks = set((ids[lo:hi] // 10).tolist())
        assert chunks == set(order.unit_chunks(u).tolist()) and len(chunks) <= 3


def test_order_is_a_pure_function_of_seed_and_epoch():
    def ids(seed, epoch):
        return EpochOrder(500, 7, 4, seed, epoch, True).ids(0, 500).tolist()

    assert ids(1, 3) == ids(1, 3)
    assert ids(1, 3) != ids(1, 4)
    assert ids(1, 3) != ids(2, 3)
    assert EpochOrder(50, 7, 2, 0, 0, False).ids(0, 50).tolist() == list(range(50))


def test_orders_of_seeds_and_epochs_below_2_32_are_those_saved_states_expect():
    # pinned: a state saved with these (seed, epoch) must resume on the same order
    order = EpochOrder(40, chunk_len=4, block_chunks=2, seed=7, epoch=3, shuffle=True)
    assert order.ids(0, 40).tolist() == [
        21, 20, 14, 22, 12, 23, 15, 13, 30, 19, 28, 16, 31, 18, 17, 29, 2, 34, 32, 0,
        3, 1, 35, 33, 11, 10, 38, 9, 39, 37, 8, 36, 6, 5, 25, 7, 24, 26, 27, 4,
    ]  # fmt: skip
    top = 2**32 - 1
    order = EpochOrder(24, chunk_len=3, block_chunks=2, seed=top, epoch=top, shuffle=True)
    assert order.ids(0, 24).tolist() == [
        14, 1, 12, 2, 0, 13, 15, 16, 9, 11, 17, 10, 4, 5, 3, 18, 19, 20, 22, 21, 6, 7, 23, 8,
    ]  # fmt: skip


def test_large_seeds_and_epochs_never_share_an_order():
    def chunk_order(seed, epoch):
        return EpochOrder(400, 10, 4, seed, epoch, True).chunk_order.tolist()

    big = 0x9E3779B97F4A7C15  # a 64-bit seed, as torch.initial_seed() gives
    pairs = [
        ((5 + 3 * 2**32, 0), (5, 3)),
        ((2**32, 0), (0, 1)),
        ((big, 0), (big % 2**32, big >> 32)),
        ((0, 2**32), (0, 0)),
        ((2**64, 0), (0, 0)),
        ((2**32, 1), (1, 2**32)),
    ]
    for first, second in pairs:
        assert chunk_order(*first) != chunk_order(*second), (first, second)
    order = EpochOrder(100, 7, 3, seed=big, epoch=2**40, shuffle=True)
    assert sorted(order.ids(0, 100).tolist()) == list(range(100))
    assert (
        order.ids(0, 100).tolist() == EpochOrder(100, 7, 3, big, 2**40, True).ids(0, 100).tolist()
    )


@pytest.mark.parametrize("n", [0, 1, 7, 64, 103])
@pytest.mark.parametrize(
    "world,workers,batch", [(1, 1, 1), (1, 3, 4), (2, 1, 4), (3, 2, 5), (4, 2, 3), (2, 5, 1)]
)
def test_every_position_dealt_with_equal_batch_counts(n, world, workers, batch):
    for drop_last in (False, True):
        layout = Layout(world, workers, batch, drop_last)
        remaining = [(0, n)] if n else []
        per_rank = [rank_items(remaining, layout, r) for r in range(world)]
        assert len({len(items) for items in per_rank}) == 1
        assert len(per_rank[0]) == layout.rank_batches(n)
        seen = Counter(p for items in per_rank for item in items for p in item)
        assert all(0 < len(item) <= batch for items in per_rank for item in items)
        # the workers of a rank never repeat a sample; only ranks are padded
        for items in per_rank:
            assert max(Counter(p for item in items for p in item).values(), default=1) == 1
        if drop_last:
            assert max(seen.values(), default=1) == 1
            assert n - len(seen) < world * (batch + 1)
            assert all(len(item) == batch for items in per_rank for item in items)
        else:
            assert set(seen) == set(range(n))
            assert sum(seen.values()) - n < world
            if n % world == 0:
                assert max(seen.values(), default=1) == 1
            # in one rank, short batches only at the end of a worker's run
            assert sum(len(item) < batch for item in per_rank[0]) <= 1


@pytest.mark.parametrize("steps", [0, 1, 3, 6, 7])
@pytest.mark.parametrize(
    "old,new",
    [
        ((2, 1, 4), (1, 1, 8)),
        ((2, 1, 4), (4, 1, 2)),
        ((1, 2, 8), (2, 2, 4)),
        ((1, 3, 8), (2, 1, 4)),
    ],
)
def test_resume_on_another_layout_loses_and_repeats_nothing(steps, old, new):
    n = 112  # divisible by every slot count here, so no padding
    a, b = Layout(*old), Layout(*new)
    remaining = [(0, n)]
    before = Counter()
    for r in range(a.world_size):
        for item in rank_items(remaining, a, r)[:steps]:
            before.update(item)
    rest = remaining_after(remaining, a, steps)
    after = Counter()
    for r in range(b.world_size):
        for item in rank_items(rest, b, r):
            after.update(item)
    assert before + after == Counter(range(n))
    assert total(rest) == n - sum(before.values())


def test_finished_epoch_leaves_nothing_even_with_drop_last():
    layout = Layout(2, 1, 4, drop_last=True)
    assert remaining_after([(0, 103)], layout, layout.rank_batches(103)) == []


def test_same_layout_continues_each_slot():
    layout = Layout(2, 1, 4)
    remaining = [(0, 40)]
    full = rank_items(remaining, layout, 1)
    assert rank_items(remaining, layout, 1, first=2) == full[2:]


def test_layout_validation():
    with pytest.raises(ValueError):
        Layout(0, 1, 1)
    with pytest.raises(ValueError):
        EpochOrder(10, 0, 1, 0, 0, True)
    assert Layout.from_list(Layout(3, 2, 5, True).to_list()) == Layout(3, 2, 5, True)
    assert np.array_equal(EpochOrder(0, 4, 1, 0, 0, True).ids(0, 0), np.zeros(0))


def test_layout_arguments_are_whole_numbers_named_when_not():
    from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

    for kwargs, error, message in [
        ({"world_size": 1.5}, ArgumentTypeError, "world_size must be an int, got 1.5"),
        ({"world_size": "2"}, ArgumentTypeError, "world_size must be an int, got '2'"),
        ({"workers": True}, ArgumentTypeError, "workers must be an int, got True"),
        ({"batch_size": 0}, InvalidArgumentError, "batch_size must be >= 1, got 0"),
    ]:
        with pytest.raises(error, match=message):
            Layout(**kwargs)
    for values in ([1, 2], "1114", [1, 1, 4, 2], [1, 1, 4, 0.0]):
        with pytest.raises(InvalidArgumentError, match=r"drop_last|Layout\.from_list takes"):
            Layout.from_list(values)
    assert Layout(np.int64(2), batch_size=np.int32(4)) == Layout(2, 1, 4)
    assert type(Layout(np.int64(2)).world_size) is int


layouts = st.builds(
    Layout,
    world_size=st.integers(1, 4),
    workers=st.integers(1, 3),
    batch_size=st.integers(1, 9),
    drop_last=st.just(False),
)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 150),
    chain=st.lists(st.tuples(layouts, st.floats(0, 1)), min_size=1, max_size=3),
)
def test_chained_resumes_cover_the_epoch(n, chain):
    """Stop part-way under one layout, resume under another, again: every sample is seen,
    repeats only by the documented padding (fewer than `world_size` per split)."""
    remaining = [(0, n)] if n else []
    seen: Counter = Counter()
    allowed = 0
    for i, (layout, fraction) in enumerate(chain):
        per_rank = [rank_items(remaining, layout, r) for r in range(layout.world_size)]
        last = i == len(chain) - 1
        steps = len(per_rank[0]) if last else int(fraction * len(per_rank[0]))
        for items in per_rank:
            for item in items[:steps]:
                seen.update(item)
        allowed += layout.world_size - 1
        remaining = remaining_after(remaining, layout, steps)
    assert remaining == []
    assert set(seen) == set(range(n))
    assert sum(seen.values()) - n <= allowed
