"""Pure pieces: the scaling policy table, Compose interpolation, the task model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.models import TaskStatus, TaskSubmit, is_task_id, new_task_id
from core.policy import Action, Inputs, recommend
from native.compose import InterpolationError, interpolate


@pytest.mark.parametrize(
    ("queue", "workers", "in_flight", "action", "desired"),
    [
        (0, 2, 0, Action.SCALE_DOWN, 1),  # idle: one fewer
        (0, 1, 0, Action.MAINTAIN, 1),  # never below min
        (2, 2, 2, Action.MAINTAIN, 2),
        (3, 2, 2, Action.SCALE_UP, 3),  # more queued than workers
        (7, 2, 2, Action.SCALE_UP, 4),  # over 3x: two more
        (100, 7, 7, Action.SCALE_UP, 8),  # clamped to max
        (100, 8, 8, Action.MAINTAIN, 8),
        (5, 0, 0, Action.SCALE_UP, 2),  # no workers at all
    ],
)
def test_policy_table(queue: int, workers: int, in_flight: int, action: Action, desired: int) -> None:
    advice = recommend(Inputs(queue_length=queue, active_workers=workers, in_flight=in_flight, max_workers=8))
    assert (advice.action, advice.recommended_workers) == (action, desired)
    assert advice.reasons


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("$A/$$B", {"A": "x"}, "x/$B"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("redis://:${P}@${H:-redis}:${PORT:-6379}/0", {"P": "s", "H": "127.0.0.1"}, "redis://:s@127.0.0.1:6379/0"),
    ],
)
def test_interpolation(text: str, variables: dict[str, str], expected: str) -> None:
    assert interpolate(text, variables) == expected


def test_required_variables_refuse_to_start() -> None:
    with pytest.raises(InterpolationError, match=r"run \./demo\.sh"):
        interpolate({"x": ["${SECRET:?run ./demo.sh}"]}, {})


@pytest.mark.parametrize("task_type", ["echo", "a.b:c-d_e", "x" * 64, "0"])
def test_valid_types(task_type: str) -> None:
    assert TaskSubmit(type=task_type).data == {}


@pytest.mark.parametrize("task_type", ["", "x" * 65, "a b", "<script>", "é"])
def test_invalid_types(task_type: str) -> None:
    with pytest.raises(ValidationError):
        TaskSubmit(type=task_type)


def test_ids_are_random_uuids() -> None:
    ids = {new_task_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(is_task_id(i) for i in list(ids)[:10])
    assert not is_task_id("1700000000000")


def test_final_states() -> None:
    assert {s for s in TaskStatus if s.is_final} == {TaskStatus.COMPLETED, TaskStatus.FAILED}
