"""The rolling restart under load: each restart checked by PID, the users' counts explained."""

from __future__ import annotations

from protolab.labs.rolling_restart import LoadResult


def test_a_rolling_restart_is_checked_by_pid() -> None:
    assert LoadResult("jwt", restarts=[("b1", 10, 11), ("b2", 12, 13)]).restarted().observed
    same = LoadResult("jwt", restarts=[("b1", 10, 11), ("b2", 12, 12)]).restarted()
    assert same.failed and "b2 pid 12 → 12" in same.why
    assert LoadResult("jwt").restarted().failed  # no restart at all is not a rolling restart


def test_the_users_counts_are_explained_by_kind() -> None:
    r = LoadResult("memory", requests=10_003, total=10_000, logins=8, relogins=6_646,
                   sent=16_657, answered=16_657)
    o = r.counted()
    assert o.observed and o.seen.startswith(
        "16657 requests written = 10003 add item/view cart (10000 asked; 3 more were already "
        "in flight when the count was reached) + 8 logins + 6646 logins again after a 401")
    assert LoadResult("x", requests=5, total=5, logins=1, sent=7, answered=7).counted().failed
