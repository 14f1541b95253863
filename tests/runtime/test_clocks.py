"""Clock helpers: deadlines and pacing."""

from __future__ import annotations

import time

import pytest

from closedloop.runtime import Deadline, Pacer, elapsed_s, now_ns, ns_to_s, s_to_ns


def test_conversions_and_elapsed() -> None:
    assert s_to_ns(1.5) == 1_500_000_000 and ns_to_s(250_000_000) == 0.25
    start = now_ns()
    time.sleep(0.01)
    assert 0.009 < elapsed_s(start) < 1.0


def test_deadlines() -> None:
    never = Deadline.after_ms(None)
    assert never.remaining_ms() is None and not never.expired()
    soon = Deadline.after_ms(20)
    assert 0 < soon.remaining_ms() <= 20 and not soon.expired()
    time.sleep(0.03)
    assert soon.expired() and soon.remaining_ms() == 0 and soon.remaining_s() == 0.0


@pytest.mark.realtime
def test_pacer_keeps_the_average_rate() -> None:
    pacer = Pacer(1000.0)
    taken = 0
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        due = pacer.due()
        if due > 0:
            pacer.take(due)
            taken += due
        else:
            pacer.sleep_until_due()
    assert 170 <= taken <= 215
    with pytest.raises(ValueError):
        Pacer(0)
