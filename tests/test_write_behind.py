"""WriteBehind: queued writes run in order on another thread; failures reach the caller."""

from __future__ import annotations

import threading
import time

import pytest

from autocompress.write_behind import WriteBehind


def test_writes_run_in_the_order_asked_and_drain_waits_for_all() -> None:
    writes = WriteBehind()
    done: list[int] = []
    for i in range(30):
        writes.submit(lambda i=i: (time.sleep(0.001 * (i % 3)), done.append(i)))
    writes.drain()
    assert done == list(range(30))


def test_the_caller_does_not_wait_for_a_write() -> None:
    writes = WriteBehind()
    release = threading.Event()
    threads: list[int] = []
    writes.submit(lambda: (release.wait(10), threads.append(threading.get_ident())))
    assert threads == []  # submit returned while the write was still blocked
    release.set()
    writes.drain()
    assert threads and threads[0] != threading.get_ident()


def test_a_failed_write_is_raised_at_the_next_drain_and_later_writes_still_run() -> None:
    writes = WriteBehind()
    done: list[str] = []
    release = threading.Event()

    def fail() -> None:
        release.wait(10)
        raise RuntimeError("database is locked")

    writes.submit(fail)
    writes.submit(lambda: done.append("end"))
    release.set()
    with pytest.raises(RuntimeError, match="database is locked"):
        writes.drain()
    writes.drain()  # raised once
    assert done == ["end"]


def test_a_failed_write_is_raised_at_the_next_submit_once_it_has_run() -> None:
    writes = WriteBehind()
    failed = threading.Event()

    def fail() -> None:
        failed.set()
        raise OSError("no space left on device")

    writes.submit(fail)
    failed.wait(10)
    time.sleep(0.05)  # the future is marked done just after the exception
    with pytest.raises(OSError, match="no space left"):
        writes.submit(lambda: None)
