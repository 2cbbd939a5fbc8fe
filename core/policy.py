"""The scaling recommendation: a pure function of a few numbers, table-tested.

This first version keeps the earlier demo's rules (queue length against workers) so its
users see the same advice; the dashboard issue replaces it with a throughput model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    MAINTAIN = "maintain"


@dataclass(frozen=True)
class Inputs:
    queue_length: int
    active_workers: int
    in_flight: int = 0
    min_workers: int = 1
    max_workers: int = 8


@dataclass(frozen=True)
class Recommendation:
    action: Action
    current_workers: int
    recommended_workers: int
    urgency: str
    reasons: list[str] = field(default_factory=list)


def recommend(i: Inputs) -> Recommendation:
    current = i.active_workers
    if i.queue_length > 3 * max(current, 1):
        desired, urgency = current + 2, "high"
        reason = f"{i.queue_length} queued is more than 3x the {current} worker(s)"
    elif i.queue_length > current:
        desired, urgency = current + 1, "medium"
        reason = f"{i.queue_length} queued is more than the {current} worker(s)"
    elif i.queue_length < current / 2 and i.in_flight < current:
        desired, urgency = current - 1, "low"
        reason = f"{i.queue_length} queued is under half the {current} worker(s)"
    else:
        desired, urgency = current, "low"
        reason = f"{i.queue_length} queued fits the {current} worker(s)"
    clamped = max(i.min_workers, min(i.max_workers, desired))
    reasons = [reason]
    if clamped != desired:
        reasons.append(f"kept within {i.min_workers}..{i.max_workers} workers")
    if clamped > current:
        action = Action.SCALE_UP
    elif clamped < current:
        action = Action.SCALE_DOWN
    else:
        action = Action.MAINTAIN
    return Recommendation(action, current, clamped, urgency if action is not Action.MAINTAIN else "low", reasons)
