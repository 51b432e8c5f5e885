"""The ABC rule of article 001, alone: need + budget + urgent = A, need + budget = B, need without budget = C,
no need (or not answered) = no class."""

from __future__ import annotations

import pytest

from app.domain.abc import classify, rank


@pytest.mark.parametrize(
    ("need", "budget", "urgency", "expected"),
    [
        ("yes", "yes", "yes", "A"),
        ("yes", "yes", "no", "B"),
        ("yes", "yes", None, "B"),
        ("yes", "no", "yes", "C"),
        ("yes", "no", "no", "C"),
        ("yes", None, "yes", "C"),
        ("no", "yes", "yes", ""),
        (None, "yes", "yes", ""),
        (None, None, None, ""),
    ],
)
def test_the_class_follows_need_budget_and_urgency(
    need: str | None, budget: str | None, urgency: str | None, expected: str
) -> None:
    assert classify(need, budget, urgency) == expected


def test_classes_sort_a_b_c_then_unclassified() -> None:
    assert sorted(["", "C", "A", "B", ""], key=rank) == ["A", "B", "C", "", ""]
