"""Signals: a first SIGTERM inside a shielded block (a database write) waits for its end."""

from __future__ import annotations

import os
import signal

import pytest

from autocompress.signals import Interrupted, interruptible, shielded


def test_a_signal_inside_a_shielded_block_is_raised_at_its_end() -> None:
    finished = False
    with pytest.raises(Interrupted, match="SIGTERM") as info, interruptible(), shielded():
        os.kill(os.getpid(), signal.SIGTERM)
        finished = True  # the write completes despite the signal
    assert finished
    assert info.value.exit_status == 143


def test_a_signal_outside_a_shield_is_raised_at_once() -> None:
    reached = False
    with pytest.raises(Interrupted, match="SIGINT"), interruptible():
        os.kill(os.getpid(), signal.SIGINT)
        reached = True
    assert not reached
