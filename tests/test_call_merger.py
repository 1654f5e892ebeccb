"""CallMerger: concurrent calls merged into one run, a lone call started at once, bounded queue.

Unit tests with a fake ``run``; the real scorer's merging is tested over HTTP in
tests/bento/test_http.py (test_concurrent_single_calls_are_batched).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fraudstream.call_merger import CallMerger, MergerOverloadedError


class FakeRun:
    """Doubles its items; each run waits until released (or ``delay`` seconds)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_on: int | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot score {self.fail_on}")
        return [2 * i for i in items]


def merger(run: FakeRun, **kwargs: float) -> CallMerger[int, int]:
    options = {"max_batch": 100, "max_wait_s": 10.0, "max_pending": 1000, **kwargs}
    return CallMerger(run, **options)  # type: ignore[arg-type]


def test_a_lone_call_runs_at_once_without_gathering():
    async def main() -> float:
        m = merger(FakeRun())
        started = time.perf_counter()
        assert await m.call([3]) == [6]
        return time.perf_counter() - started

    # a gathering wait would be at least a timer tick; this is one event-loop turn
    assert asyncio.run(main()) < 0.05


def test_calls_arriving_during_a_run_share_the_next_run():
    run = FakeRun(delay=0.05)

    async def main() -> list[list[int]]:
        m = merger(run)
        first = asyncio.create_task(m.call([0]))
        await asyncio.sleep(0.01)  # the first run is in flight
        rest = [asyncio.create_task(m.call([i])) for i in range(1, 11)]
        results = await asyncio.gather(first, *rest)
        return results

    results = asyncio.run(main())
    assert results == [[2 * i] for i in range(11)]  # each caller gets its own result, in order
    assert run.batches == [[0], list(range(1, 11))]


def test_a_call_with_several_items_gets_its_slice():
    run = FakeRun(delay=0.02)

    async def main() -> list[list[int]]:
        m = merger(run)
        return await asyncio.gather(m.call([1, 2]), m.call([3]), m.call([4, 5, 6]))

    assert asyncio.run(main()) == [[2, 4], [6], [8, 10, 12]]
    assert run.batches == [[1, 2, 3, 4, 5, 6]]


def test_batches_never_exceed_max_batch():
    run = FakeRun(delay=0.01)

    async def main() -> None:
        m = merger(run, max_batch=4)
        await asyncio.gather(*(m.call([i]) for i in range(10)))

    asyncio.run(main())
    assert [len(b) for b in run.batches] == [4, 4, 2]
    assert sorted(i for b in run.batches for i in b) == list(range(10))


def test_a_failing_run_fails_only_the_calls_of_its_batch():
    run = FakeRun(delay=0.02)
    run.fail_on = 1

    async def main() -> list[object]:
        m = merger(run, max_batch=2)
        calls = [m.call([i]) for i in range(4)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [type(o) for o in outcomes[:2]] == [ValueError, ValueError]
    assert outcomes[2:] == [[4], [6]]


def test_calls_that_waited_too_long_are_shed_not_run():
    run = FakeRun(delay=0.1)

    async def main() -> list[object]:
        m = merger(run, max_wait_s=0.05)
        first = asyncio.create_task(m.call([0]))
        await asyncio.sleep(0.01)
        late = [asyncio.create_task(m.call([i])) for i in (1, 2)]
        return await asyncio.gather(first, *late, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[0] == [0]
    assert all(isinstance(o, MergerOverloadedError) for o in outcomes[1:])
    assert run.batches == [[0]]  # the shed calls never reached the model


def test_the_queue_is_bounded():
    run = FakeRun(delay=0.05)

    async def main() -> list[object]:
        m = merger(run, max_pending=3)
        first = asyncio.create_task(m.call([0]))
        await asyncio.sleep(0.01)  # running: the queue is empty again
        queued = [asyncio.create_task(m.call([i])) for i in range(1, 6)]
        return await asyncio.gather(first, *queued, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[:4] == [[0], [2], [4], [6]]
    assert all(isinstance(o, MergerOverloadedError) for o in outcomes[4:])


def test_a_run_returning_the_wrong_number_of_results_fails_its_calls():
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def main() -> None:
        m: CallMerger[int, int] = CallMerger(short, max_batch=10, max_wait_s=1, max_pending=10)
        await m.call([1, 2])

    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        asyncio.run(main())


def test_a_cancelled_caller_is_left_out_and_the_merger_goes_on():
    run = FakeRun(delay=0.02)

    async def main() -> list[int]:
        m = merger(run)
        first = asyncio.create_task(m.call([0]))
        await asyncio.sleep(0.005)
        gone = asyncio.create_task(m.call([1]))
        await asyncio.sleep(0)
        gone.cancel()
        await first
        assert m.pending == 0
        return await m.call([2])

    assert asyncio.run(main()) == [4]
    assert [1] not in run.batches and [1, 2] not in run.batches
