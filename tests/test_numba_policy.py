"""The one thread-count policy (:func:`nanoro_optics._numba.fusion_threads`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanoro_optics._numba import fusion_threads, max_threads


@given(busy=st.integers(0, 64), limit=st.none() | st.integers(1, 64))
def test_policy_stays_between_one_and_the_machine(busy: int, limit: int | None) -> None:
    n = fusion_threads(busy=busy, limit=limit)
    assert 1 <= n <= max_threads()
    if limit is not None:
        assert n <= limit
    # each busy thread takes one core away, down to the floor of one
    most = max_threads() if limit is None else min(limit, max_threads())
    assert n == max(1, most - busy)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"busy": -1}, ValueError, "busy"),
        ({"busy": 1.0}, TypeError, "busy"),
        ({"limit": 0}, ValueError, "limit"),
        ({"limit": True}, TypeError, "limit"),
    ],
)
def test_policy_refuses_bad_counts(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        fusion_threads(**kwargs)


def test_live_fusion_default_follows_the_policy() -> None:
    pytest.importorskip("pymmcore_plus")
    from nanoro_optics.mmcore import LiveFusion

    assert LiveFusion().threads == fusion_threads(busy=1)
    assert LiveFusion(threads=1).threads == 1
