"""Pure pieces: Compose interpolation, the task model (the scaling policy: tests/test_policy.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.models import TaskStatus, TaskSubmit, is_task_id, new_task_id
from native.compose import InterpolationError, interpolate


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
