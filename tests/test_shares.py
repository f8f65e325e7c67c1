"""The split of a run's limits among its workers (harness/shares.py)."""

from __future__ import annotations

import pytest

from harness.shares import Share, Spent, split


def test_what_is_left_is_split_equally_on_top_of_what_each_worker_spent() -> None:
    spent = {"a": Spent(3.0, 30), "b": Spent(1.0, 10), "gone": Spent(2.0, 20)}
    shares = split(10.0, 100, spent, ["a", "b"])
    # left: $4 and 40 requests (the gone worker's spend stays spent)
    assert shares == {"a": Share(5.0, 50), "b": Share(3.0, 30)}
    assert sum(s.budget_usd for s in shares.values()) + 2.0 == pytest.approx(10.0)


def test_whole_requests_the_remainder_to_the_first_workers_and_the_sum_is_the_limit() -> None:
    shares = split(None, 10, {}, ["c", "a", "b"])
    assert [shares[w].max_requests for w in "abc"] == [4, 3, 3]
    assert all(s.budget_usd is None for s in shares.values())


def test_a_new_worker_gets_its_part_of_what_is_left_and_nothing_is_negative() -> None:
    assert split(5.0, None, {"a": Spent(6.0, 0)}, ["a", "new"]) == {"a": Share(6.0), "new": Share(0.0)}


def test_without_limits_or_workers_there_is_nothing_to_split() -> None:
    assert split(None, None, {"a": Spent(1.0, 1)}, ["a"]) == {"a": Share()}
    assert split(10.0, 5, {}, []) == {}


def test_a_share_refuses_once_spent_or_sent_and_says_which() -> None:
    share = Share(budget_usd=1.5, max_requests=10)
    assert share.refusal(1.49, 9) is None
    assert "budget" in (share.refusal(1.5, 0) or "")
    assert "--max-requests" in (share.refusal(0.0, 10) or "")
    assert Share().refusal(1e9, 10**9) is None
    assert Share.from_dict(share.as_dict()) == share and Share.from_dict(None) == Share()
