import gc
import weakref

import pytest

from autocompress.collector import setup_frozen


class Node:
    """A reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_objects_alive_at_entry_are_frozen_for_the_block_only() -> None:
    kept = Node()
    thresholds = gc.get_threshold()
    with setup_frozen():
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())  # the collector skips it
        assert gc.get_threshold()[0] > thresholds[0]
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    assert any(obj is kept for obj in gc.get_objects())


def test_garbage_is_collected_before_the_freeze_and_inside_the_block() -> None:
    before = Node()
    dead_before = weakref.ref(before)
    del before
    with setup_frozen():
        assert dead_before() is None  # collected, not frozen forever
        inside = Node()
        dead_inside = weakref.ref(inside)
        del inside
        gc.collect()
        assert dead_inside() is None


def test_unfrozen_after_an_error() -> None:
    thresholds = gc.get_threshold()
    with pytest.raises(RuntimeError, match="trial loop failed"), setup_frozen():
        raise RuntimeError("trial loop failed")
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
