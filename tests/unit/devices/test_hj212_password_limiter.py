"""The wrong-password limiter on its own: the window, the growing and capped lock-out, the
probation after one, forgetting, and the bounded tables."""

from __future__ import annotations

from meterdesk.devices.hj212.limit import PasswordLimiter


class Seconds:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Seconds, **kwargs: int) -> tuple[PasswordLimiter, list[str]]:
    closed: list[str] = []
    limits = {"per_mn": 3, "per_address": 100, "max_entries": 100} | kwargs
    made = PasswordLimiter(window_s=600, lockout_s=(60, 300), clock=clock, **limits)
    made.on_refused = closed.append
    return made, closed


def test_only_wrong_passwords_within_the_window_count() -> None:
    clock = Seconds()
    limit, closed = limiter(clock)
    limit.wrong("a", "MN", "c1")
    clock.now += 601  # the first has left the window
    limit.wrong("a", "MN", "c2")
    limit.wrong("a", "MN", "c3")
    assert limit.admits("a", "MN", "c4") and closed == []
    limit.wrong("a", "MN", "c5")
    assert not limit.admits("b", "MN", "c6")  # the MN, from any address
    assert closed == ["c5", "c6"] and limit.stats.lockouts == 1


def test_the_lockout_doubles_in_a_row_up_to_the_cap_and_is_forgotten_later() -> None:
    clock = Seconds()
    limit, _ = limiter(clock)
    for _ in range(3):
        limit.wrong("a", "MN", "c")
    lengths = []
    for _ in range(4):  # after each lock-out, one more wrong password locks again
        start = clock.now
        while not limit.admits("a", "MN", "c"):
            clock.now += 1
        lengths.append(clock.now - start)
        limit.wrong("a", "MN", "c")
    assert lengths == [60, 120, 240, 300]
    clock.now += 300 + 600  # the last lock-out ended and a window passed: a clean slate
    limit.wrong("a", "MN", "c")
    limit.wrong("a", "MN", "c")
    assert limit.admits("a", "MN", "c")
    assert limit.stats.lockouts == 5


def test_a_right_password_clears_the_mn_but_not_the_address() -> None:
    clock = Seconds()
    limit, _ = limiter(clock, per_address=4)
    for mn in ("M1", "M1", "M2"):
        limit.wrong("a", mn, "c")
    limit.right("M1")
    limit.wrong("a", "M1", "c")
    limit.wrong("a", "M1", "c")
    assert limit.admits("b", "M1", "c")  # M1 counts 2 since the right one
    assert not limit.admits("a", "M3", "c")  # but address a has had 5 > 4


def test_the_tables_stay_bounded_dropping_the_quietest_first() -> None:
    clock = Seconds()
    limit, _ = limiter(clock, max_entries=10, per_address=1)
    limit.wrong("locked", "MN0", "c")
    for i in range(1000):
        clock.now += 0.001
        limit.wrong(f"10.0.{i // 256}.{i % 256}", f"MN{i}", "c")
    assert limit.tracked() == (10, 10)
    assert not limit.admits("10.0.3.231", "MN999", "c")  # the newest are kept
    clock.now += 700  # all expired: forgotten as new ones come
    limit.wrong("x", "MNX", "c")
    assert limit.tracked() == (1, 1)
