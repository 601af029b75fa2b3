"""switchyard.timeouts.within: asyncio.timeout's semantics as a plain context manager."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.timeouts import within


async def test_time_passing_becomes_timeout_error_and_stops_the_wait():
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        with within(0.05):
            await asyncio.sleep(10)
    assert loop.time() - began < 1.0
    assert asyncio.current_task().cancelling() == 0  # the cancellation it asked for is withdrawn
    await asyncio.sleep(0)  # and the task is not cancelled later


async def test_finishing_in_time_cancels_the_timer():
    with within(0.05):
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)  # the timer would have cancelled this wait
    assert asyncio.current_task().cancelling() == 0


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def body(started: asyncio.Event) -> None:
        with within(10):
            started.set()
            await asyncio.sleep(10)

    started = asyncio.Event()
    task = asyncio.create_task(body(started))
    await started.wait()
    task.cancel()  # as a client that left would
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_both_at_once_the_outside_cancellation_wins():
    async def body() -> None:
        task = asyncio.current_task()
        assert task is not None
        with within(0):  # fires on the loop's next iteration...
            asyncio.get_running_loop().call_soon(task.cancel)  # ...as does a cancellation from elsewhere
            await asyncio.sleep(10)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(body())


async def test_other_errors_pass_through_untouched():
    with pytest.raises(KeyError):
        with within(10):
            raise KeyError("x")


def test_outside_an_event_loop_it_refuses():
    with pytest.raises(RuntimeError):
        within(1)
