"""The dynamic batcher on its own, driven by a controllable fake consumer.

The fake consumer is a legitimate test double here: these tests are about batch
formation, keying, deadlines, back-pressure, cancellation and poison isolation, not
about synthesis.  Synchronisation uses asyncio events and futures, never sleeps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from test_api import wait_until
from tts_service.batcher import DynamicBatcher
from tts_service.errors import DeadlineExceeded, Draining, EngineError, QueueFull

LONG = 30.0  # a max wait / timeout that a passing test never reaches


@dataclass(frozen=True)
class Item:
    value: int
    key: str = "a"
    poison: bool = False


class FakeConsumer:
    """Records batches; can be paused with a gate; fails on poisoned items."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, items: list[Item]) -> list:
        self.batches.append(list(items))
        self.entered.set()
        await self.gate.wait()
        if any(item.poison for item in items):
            raise ValueError("poisoned input")
        return [item.value * 10 for item in items]


def queued(batcher: DynamicBatcher, item: Item, timeout_s: float | None = None) -> asyncio.Future:
    """Submit ``item`` now -- it is in the queue when this returns, no loop turn needed -- and
    wait for its result in a task."""
    return asyncio.ensure_future(batcher.result(batcher.submit(item, timeout_s)))


def make(consumer, **kwargs) -> DynamicBatcher:
    options = dict(
        max_batch_size=4,
        max_wait_s=LONG,
        max_queue_size=100,
        default_timeout_s=LONG,
        key=lambda item: item.key,
    )
    options.update(kwargs)
    batcher = DynamicBatcher(consumer, **options)
    batcher.start()
    return batcher


async def test_full_batch_does_not_wait():
    consumer = FakeConsumer()
    batcher = make(consumer, max_batch_size=4, max_wait_s=LONG)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(Item(i)) for i in range(4))), timeout=5)
    assert results == [0, 10, 20, 30]
    assert [len(b) for b in consumer.batches] == [4]
    await batcher.close()


async def test_partial_batch_is_sent_after_max_wait():
    consumer = FakeConsumer()
    batcher = make(consumer, max_batch_size=8, max_wait_s=0.05)
    results = await asyncio.wait_for(
        asyncio.gather(batcher.infer(Item(1)), batcher.infer(Item(2))), timeout=5
    )
    assert results == [10, 20]
    assert [len(b) for b in consumer.batches] == [2]
    await batcher.close()


async def test_batches_split_by_max_size_and_keep_fifo_order():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=3, max_wait_s=0)
    first = asyncio.ensure_future(batcher.infer(Item(0)))
    await consumer.entered.wait()  # the worker is busy with batch [0]
    rest = [queued(batcher, Item(i)) for i in range(1, 8)]
    consumer.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5)
    assert results == [i * 10 for i in range(8)]
    assert [[item.value for item in b] for b in consumer.batches] == [[0], [1, 2, 3], [4, 5, 6], [7]]
    await batcher.close()


async def test_only_items_with_the_same_key_share_a_batch():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=8, max_wait_s=0)
    blocker = asyncio.ensure_future(batcher.infer(Item(99, key="z")))
    await consumer.entered.wait()
    items = [Item(i, key="ab"[i % 2]) for i in range(6)]
    futures = [queued(batcher, item) for item in items]
    consumer.gate.set()
    results = await asyncio.wait_for(asyncio.gather(blocker, *futures), timeout=5)
    assert results == [990] + [i * 10 for i in range(6)]
    for batch in consumer.batches:
        assert len({item.key for item in batch}) == 1
    # The oldest waiting item's key goes first.
    assert [[i.value for i in b] for b in consumer.batches[1:]] == [[0, 2, 4], [1, 3, 5]]
    await batcher.close()


async def test_queue_full_rejects_at_once():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=1, max_wait_s=0, max_queue_size=2)
    running = asyncio.ensure_future(batcher.infer(Item(0)))
    await consumer.entered.wait()
    waiting = [queued(batcher, Item(i)) for i in (1, 2)]
    with pytest.raises(QueueFull) as excinfo:
        await batcher.infer(Item(3))
    assert excinfo.value.code == "queue_full"
    consumer.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, *waiting), timeout=5) == [0, 10, 20]
    await batcher.close()


async def test_expired_item_is_dropped_and_never_computed():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=1, max_wait_s=0)
    running = asyncio.ensure_future(batcher.infer(Item(0)))
    await consumer.entered.wait()
    with pytest.raises(DeadlineExceeded) as excinfo:
        await batcher.infer(Item(1), timeout_s=0.01)
    assert excinfo.value.code == "deadline_exceeded"
    assert "queued" in excinfo.value.message
    survivor = queued(batcher, Item(2))
    consumer.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, survivor), timeout=5) == [0, 20]
    computed = [item.value for batch in consumer.batches for item in batch]
    assert 1 not in computed
    await batcher.close()


async def test_cancelled_request_is_removed_from_the_queue():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=4, max_wait_s=0)
    running = asyncio.ensure_future(batcher.infer(Item(0)))
    await consumer.entered.wait()
    gone = asyncio.ensure_future(batcher.infer(Item(1)))
    kept = asyncio.ensure_future(batcher.infer(Item(2)))
    await wait_until(lambda: batcher.queue_depth == 2)  # both handlers wait for their results
    gone.cancel()  # what aiohttp does to a handler whose client disconnected
    await asyncio.gather(gone, return_exceptions=True)
    assert batcher.queue_depth == 1
    consumer.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, kept), timeout=5) == [0, 20]
    computed = [item.value for batch in consumer.batches for item in batch]
    assert computed == [0, 2]
    await batcher.close()


async def test_an_entry_cancelled_before_anyone_awaited_it_leaves_the_queue_at_once():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=4, max_wait_s=0, max_queue_size=1)
    running = asyncio.ensure_future(batcher.infer(Item(0)))
    await consumer.entered.wait()
    entry = batcher.submit(Item(1))
    batcher.cancel(entry)  # e.g. a stream whose client left before its result task first ran
    assert batcher.queue_depth == 0
    kept = queued(batcher, Item(2))  # its place was freed at once (the queue holds one)
    consumer.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, kept), timeout=5) == [0, 20]
    assert [item.value for batch in consumer.batches for item in batch] == [0, 2]
    await batcher.close()


async def test_poisoned_item_fails_alone():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=4, max_wait_s=0)
    blocker = asyncio.ensure_future(batcher.infer(Item(9)))
    await consumer.entered.wait()
    futures = [queued(batcher, Item(i, poison=(i == 2))) for i in range(4)]
    consumer.gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=5)
    assert outcomes[0] == 0 and outcomes[1] == 10 and outcomes[3] == 30
    assert isinstance(outcomes[2], ValueError)
    # The failing batch of 4 was retried in halves until the poisoned item stood alone.
    assert [[i.value for i in b] for b in consumer.batches] == [[9], [0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]
    assert await blocker == 90
    # The loop is still alive.
    assert await asyncio.wait_for(batcher.infer(Item(5)), timeout=5) == 50
    await batcher.close()


async def test_per_item_exception_in_results_fails_only_that_item():
    async def consumer(items):
        return [ValueError("bad row") if item.value == 1 else item.value for item in items]

    batcher = make(consumer, max_batch_size=3)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(batcher.infer(Item(i)) for i in range(3)), return_exceptions=True), 5
    )
    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], ValueError)
    await batcher.close()


async def test_result_count_is_checked_against_batch_size():
    calls: list[int] = []

    async def short_consumer(items):
        calls.append(len(items))
        return [item.value for item in items][:1]  # drops results for batches > 1

    batcher = make(short_consumer, max_batch_size=3)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(Item(i)) for i in range(3))), timeout=5)
    # The mismatch was detected and the batch retried smaller until each item got its own result.
    assert results == [0, 1, 2]
    assert calls == [3, 2, 1, 1, 1]


async def test_result_count_mismatch_on_single_item_is_an_engine_error():
    async def empty_consumer(items):
        return []

    batcher = make(empty_consumer, max_batch_size=1)
    with pytest.raises(EngineError, match="0 results for a batch of 1"):
        await asyncio.wait_for(batcher.infer(Item(1)), timeout=5)
    await batcher.close()


async def test_results_follow_identity_under_heavy_concurrency():
    async def consumer(items):
        await asyncio.sleep(0)
        return [(item.key, item.value) for item in items]

    batcher = make(consumer, max_batch_size=8, max_wait_s=0.001, max_queue_size=1000)
    items = [Item(i, key=f"k{i % 5}") for i in range(500)]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(item) for item in items)), 30)
    assert results == [(item.key, item.value) for item in items]
    await batcher.close()


async def test_close_finishes_queued_work_and_rejects_new_work():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=2, max_wait_s=LONG)
    futures = [asyncio.ensure_future(batcher.infer(Item(i))) for i in range(5)]
    await consumer.entered.wait()
    closing = asyncio.ensure_future(batcher.close())
    await wait_until(lambda: batcher.closing)
    with pytest.raises(Draining):
        await batcher.infer(Item(6))
    consumer.gate.set()
    await asyncio.wait_for(closing, timeout=5)
    assert [f.result() for f in futures] == [0, 10, 20, 30, 40]


async def test_close_timeout_fails_leftovers_with_draining():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=1, max_wait_s=0)
    futures = [asyncio.ensure_future(batcher.infer(Item(i))) for i in range(3)]
    await consumer.entered.wait()
    await asyncio.wait_for(batcher.close(timeout_s=0.01), timeout=5)
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, Draining) for o in outcomes)


async def test_observer_sees_every_batch():
    seen: list[tuple[int, int]] = []

    class Observer:
        def batch_formed(self, size, queue_waits_s):
            assert all(w >= 0 for w in queue_waits_s)
            seen.append((size, len(queue_waits_s)))

    async def consumer(items):
        return [item.value for item in items]

    batcher = make(consumer, max_batch_size=3, observer=Observer())
    await asyncio.wait_for(asyncio.gather(*(batcher.infer(Item(i)) for i in range(6))), 5)
    assert seen == [(3, 3), (3, 3)]
    await batcher.close()


async def test_loop_survives_consumer_returning_garbage_type():
    async def consumer(items):
        return None  # not even a sequence

    batcher = make(consumer, max_batch_size=1)
    with pytest.raises(TypeError):
        await asyncio.wait_for(batcher.infer(Item(1)), timeout=5)
    with pytest.raises(TypeError):
        await asyncio.wait_for(batcher.infer(Item(2)), timeout=5)
    await batcher.close()


async def test_batch_too_large_for_memory_is_retried_smaller():
    calls: list[int] = []

    async def consumer(items):
        calls.append(len(items))
        if len(items) > 2:
            raise MemoryError("CUDA out of memory")  # what torch.cuda.OutOfMemoryError is to the batcher
        return [item.value for item in items]

    batcher = make(consumer, max_batch_size=8)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(Item(i)) for i in range(8))), timeout=5)
    assert results == list(range(8))
    assert calls == [8, 4, 2, 2, 4, 2, 2]  # halved until it fit; no item failed
    await batcher.close()


# -- requests of several items (a long text's segments) ---------------------------------------


def values(batch) -> list[int]:
    return [item.value for item in batch]


async def test_a_short_request_waits_for_one_batch_of_a_long_one_not_all_of_it():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=4, max_wait_s=0)
    long = asyncio.ensure_future(batcher.results(batcher.submit_all([Item(i) for i in range(12)])))
    await consumer.entered.wait()  # the long request's first batch runs
    short = [queued(batcher, Item(100 + i)) for i in range(2)]  # two short requests arrive
    consumer.gate.set()
    assert await asyncio.wait_for(long, 5) == [i * 10 for i in range(12)]
    assert await asyncio.wait_for(asyncio.gather(*short), 5) == [1000, 1010]
    # Round-robin over the waiting requests: the short ones ride in the very next batch.
    assert [values(b) for b in consumer.batches] == [[0, 1, 2, 3], [100, 101, 4, 5], [6, 7, 8, 9], [10, 11]]
    await batcher.close()


async def test_a_request_just_served_goes_to_the_back_of_the_line_across_keys():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=2, max_wait_s=0)
    long = asyncio.ensure_future(batcher.results(batcher.submit_all([Item(i, key="a") for i in range(6)])))
    await consumer.entered.wait()
    other = queued(batcher, Item(50, key="b"))  # cannot share the long one's batches
    consumer.gate.set()
    await asyncio.wait_for(asyncio.gather(long, other), 5)
    assert [values(b) for b in consumer.batches] == [[0, 1], [50], [2, 3], [4, 5]]
    await batcher.close()


async def test_one_deadline_covers_all_of_a_requests_items():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=1, max_wait_s=0)
    running = asyncio.ensure_future(batcher.infer(Item(0)))
    await consumer.entered.wait()
    entries = batcher.submit_all([Item(i) for i in (1, 2, 3)], timeout_s=0.05)
    with pytest.raises(DeadlineExceeded, match="queued"):
        await batcher.results(entries)
    assert batcher.queue_depth == 0 and batcher.queued_items == 0  # all of it left the queue
    consumer.gate.set()
    assert await running == 0
    assert values(sum(consumer.batches, [])) == [0]  # none of its items was computed
    await batcher.close()


async def test_a_failing_item_fails_its_request_drops_the_rest_and_no_other_request():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=2, max_wait_s=0)
    blocker = asyncio.ensure_future(batcher.infer(Item(99)))
    await consumer.entered.wait()
    poisoned = batcher.submit_all([Item(1, poison=True), Item(2), Item(3), Item(4)])
    failing = asyncio.ensure_future(batcher.results(poisoned))
    neighbour = queued(batcher, Item(7))
    consumer.gate.set()
    with pytest.raises(ValueError, match="poisoned"):
        await asyncio.wait_for(failing, 5)
    assert await asyncio.wait_for(neighbour, 5) == 70
    assert await blocker == 990
    computed = values(sum(consumer.batches, []))
    assert 3 not in computed and 4 not in computed  # dropped once the request had failed
    assert batcher.queued_items == 0
    await batcher.close()


async def test_cancelling_a_request_drops_its_unstarted_items_and_frees_its_place():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=2, max_wait_s=0, max_queue_size=1)
    entries = batcher.submit_all([Item(i) for i in range(5)])
    waiting = asyncio.ensure_future(batcher.results(entries))
    await consumer.entered.wait()  # items 0 and 1 run
    with pytest.raises(QueueFull):  # the queue is bounded in requests: this one holds it
        batcher.submit(Item(9))
    waiting.cancel()  # the client went away
    await asyncio.gather(waiting, return_exceptions=True)
    assert batcher.queued_items == 0
    kept = queued(batcher, Item(8))
    consumer.gate.set()
    assert await asyncio.wait_for(kept, 5) == 80
    assert [values(b) for b in consumer.batches] == [[0, 1], [8]]
    await batcher.close()


async def test_queue_wait_is_observed_each_turn_a_request_waits_with_nothing_running():
    """Each time a request waits for the engine with none of its items running: from arrival
    for its first batch, from the end of its previous batch for the next ones -- so a long
    text behind another one reports the other's batches, and alone it reports ~0."""
    waits: list[float] = []
    spans: list[tuple[float, float]] = []

    class Observer:
        def batch_formed(self, size, queue_waits_s):
            assert len(queue_waits_s) == 1  # one request waited for each of these batches
            waits.extend(queue_waits_s)

    async def consumer(items):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(0)
        spans.append((started, loop.time()))
        return [item.value for item in items]

    batcher = make(consumer, max_batch_size=2, max_wait_s=0, observer=Observer())
    # Two long texts that cannot share a batch (different keys) take turns.
    a = batcher.submit_all([Item(i, key="a") for i in range(4)])
    b = batcher.submit_all([Item(10 + i, key="b") for i in range(4)])
    await asyncio.wait_for(asyncio.gather(batcher.results(a), batcher.results(b)), 5)
    assert len(spans) == len(waits) == 4  # batches: a, b, a, b
    # a's second wait spans b's first batch, and b's second wait a's second batch.
    assert waits[2] >= spans[1][1] - spans[1][0]
    assert waits[3] >= spans[2][1] - spans[2][0]
    await batcher.close()


async def test_an_ineligible_item_keeps_its_place_until_poked():
    allowed: set[int] = {0, 1}
    consumer = FakeConsumer()
    batcher = make(consumer, max_batch_size=4, max_wait_s=0, eligible=lambda item: item.value in allowed)
    entries = batcher.submit_all([Item(i) for i in range(4)])
    await asyncio.wait_for(asyncio.gather(*(batcher.result(e) for e in entries[:2])), 5)
    await wait_until(lambda: batcher.in_flight == 0)
    assert batcher.held_back == batcher.queued_items == 2  # waiting, not dropped, not computed
    allowed.update({2, 3})
    batcher.poke()
    assert await asyncio.wait_for(batcher.results(entries), 5) == [0, 10, 20, 30]
    assert [values(b) for b in consumer.batches] == [[0, 1], [2, 3]]
    await batcher.close()


async def test_a_short_head_is_not_batched_with_much_costlier_items_but_a_long_head_takes_short_ones():
    consumer = FakeConsumer()
    consumer.gate.clear()
    # cost = value: items 100+ are a long text's segments, items below 10 short requests.
    batcher = make(consumer, max_batch_size=4, max_wait_s=0, cost=lambda item: item.value, max_stretch=3)
    long = asyncio.ensure_future(batcher.results(batcher.submit_all([Item(100 + i) for i in range(6)])))
    await consumer.entered.wait()  # the long text's first batch runs
    shorts = [queued(batcher, Item(v)) for v in (2, 5, 7)]  # 7 > 3 x 2: not with the head 2
    consumer.gate.set()
    await asyncio.wait_for(asyncio.gather(long, *shorts), 5)
    assert [values(b) for b in consumer.batches] == [[100, 101, 102, 103], [2, 5], [7], [104, 105]]
    await batcher.close()


async def test_a_costly_head_takes_cheaper_items_along():
    consumer = FakeConsumer()
    consumer.gate.clear()
    batcher = make(consumer, max_batch_size=4, max_wait_s=0, cost=lambda item: item.value, max_stretch=3)
    blocker = asyncio.ensure_future(batcher.infer(Item(50)))
    await consumer.entered.wait()
    long = asyncio.ensure_future(batcher.results(batcher.submit_all([Item(100), Item(101)])))
    short = queued(batcher, Item(3))  # would wait for the long batch anyway: it rides along
    consumer.gate.set()
    await asyncio.wait_for(asyncio.gather(blocker, long, short), 5)
    assert [values(b) for b in consumer.batches] == [[50], [100, 3, 101]]
    await batcher.close()


# -- adaptive admission: max_wait_s is an upper bound, waited only while requests overlap --------


async def test_a_lone_client_never_waits_for_company_even_with_a_long_max_wait():
    consumer = FakeConsumer()
    batcher = make(consumer, max_batch_size=8, max_wait_s=LONG)
    for i in range(3):  # each request arrives after the previous one was answered
        assert await asyncio.wait_for(batcher.infer(Item(i)), 5) == i * 10
    assert consumer.batches == [[Item(0)], [Item(1)], [Item(2)]]
    assert not batcher.company_expected(asyncio.get_running_loop().time())


async def test_overlapping_requests_wait_for_batch_mates_up_to_max_wait():
    consumer = FakeConsumer()
    batcher = make(consumer, max_batch_size=3, max_wait_s=LONG)
    consumer.gate.clear()
    first = queued(batcher, Item(0))
    await consumer.entered.wait()  # the first started at once: nothing had overlapped yet
    second = queued(batcher, Item(1))  # arrives while the first runs: traffic overlaps
    assert batcher.company_expected(asyncio.get_running_loop().time())
    consumer.gate.set()
    assert await asyncio.wait_for(first, 5) == 0
    # The second is at the head of a free engine now, and waits for company instead of going alone.
    rest = [queued(batcher, Item(2)), queued(batcher, Item(3))]
    assert await asyncio.wait_for(asyncio.gather(second, *rest), 5) == [10, 20, 30]
    assert consumer.batches == [[Item(0)], [Item(1), Item(2), Item(3)]]
