"""The attempts a worker holds, one object each, and the registry that owns their transitions
and is the only place counting execution slots."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

from core.models import TaskRecord, TaskStatus
from core.queue import Claim


class Stage(enum.Enum):
    #: claimed; holds a slot while its record is checked
    CLAIMED = "claimed"
    #: its handler runs, under its deadline; holds a slot
    RUNNING = "running"
    #: its handler returned (or it never ran one): slot freed, its records go on being written
    RAN = "ran"


@dataclass(slots=True, eq=False)
class Attempt:
    """One claimed task in this worker, from its claim until its last step here."""

    claim: Claim
    #: the asyncio task taking it through its steps (None for one run outside the claim loop)
    job: asyncio.Task[None] | None = None
    stage: Stage = Stage.CLAIMED
    #: its own fields, set when its handler starts, that every copy of its record carries
    #: (started_at, completed_at, worker_id, attempts)
    fields: dict[str, Any] | None = None
    #: loop time its handler started, and the time past which the watch times it out
    started: float = 0.0
    deadline: float = 0.0
    #: the handler's timeout: it cancels the handler and turns that into TimeoutError on its own
    timeout: asyncio.Timeout | None = None
    timed_out: bool = False
    #: the processing record's write, once the watch staged it
    shown: asyncio.Future[None] | None = None
    #: a client asked to cancel it (its claim said so, or Attempts.cancel): it ends cancelled
    cancelled: bool = False

    def processing_record(self) -> TaskRecord:
        record, fields = self.claim.record, self.fields
        if record is None or fields is None:
            raise RuntimeError("only an attempt whose handler started has a processing record")
        return record.model_copy(update={**fields, "status": TaskStatus.PROCESSING})


class Attempts:
    """Every attempt this worker holds, by task id. Each transition is one method here:
    claimed (slot taken) -> start (handler running, deadline set) -> ran (slot freed) ->
    finished (forgotten); time_out cancels a running handler past its deadline, cancel one a
    client wants stopped."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._held: dict[str, Attempt] = {}
        #: attempts holding a slot: from their claim until their handler returns
        self._busy = 0
        #: set while a slot is free
        self._slot_free = asyncio.Event()
        self._slot_free.set()

    def __len__(self) -> int:
        return len(self._held)

    def free_slots(self) -> int:
        return self.slots - self._busy

    async def wait_for_slot(self) -> None:
        await self._slot_free.wait()

    def claimed(self, claim: Claim) -> Attempt:
        attempt = Attempt(claim, cancelled=claim.cancel_requested)
        self._held[claim.id] = attempt
        self._busy += 1
        if self._busy >= self.slots:
            self._slot_free.clear()
        return attempt

    def start(self, attempt: Attempt, fields: dict[str, Any], seconds: float) -> asyncio.Timeout:
        """Its handler starts now: run it inside the returned timeout, which has no timer of its
        own; the watch brings it forward once `seconds` have passed (one timer for all attempts)."""
        attempt.stage = Stage.RUNNING
        attempt.fields = fields
        attempt.started = asyncio.get_running_loop().time()
        attempt.deadline = attempt.started + seconds
        attempt.timeout = asyncio.timeout(None)
        return attempt.timeout

    def time_out(self, attempt: Attempt) -> None:
        """Past its deadline: its timeout cancels the handler, then raises TimeoutError in its job."""
        if attempt.stage is Stage.RUNNING and not attempt.timed_out and attempt.timeout is not None:
            attempt.timed_out = True
            attempt.timeout.reschedule(asyncio.get_running_loop().time())

    def cancel(self, task_id: str) -> bool:
        """A client asked to stop this task: one not yet started never starts, a running one's
        timeout cancels its handler now (CancelledError inside it, so it may clean up).
        Whether this worker holds it before its handler returned."""
        attempt = self._held.get(task_id)
        if attempt is None or attempt.stage is Stage.RAN:
            return False
        attempt.cancelled = True
        if attempt.stage is Stage.RUNNING and attempt.timeout is not None:
            attempt.timeout.reschedule(asyncio.get_running_loop().time())
        return True

    def ran(self, attempt: Attempt) -> None:
        """Its handler returned, or it needs none: the slot goes to the next claim at once, while
        its records are still written (a Redis and a Postgres trip, bounded by the persister)."""
        if attempt.stage is not Stage.RAN:
            attempt.stage = Stage.RAN
            self._busy -= 1
            self._slot_free.set()

    def finished(self, attempt: Attempt) -> None:
        """Its last step here is done (handed to the persister, parked for a retry, acked, or
        handed back): forget it, and free its slot if its handler never ran."""
        self.ran(attempt)
        if self._held.get(attempt.claim.id) is attempt:
            del self._held[attempt.claim.id]

    def running(self) -> list[Attempt]:
        """The attempts whose handler runs now, for the watch."""
        return [attempt for attempt in self._held.values() if attempt.stage is Stage.RUNNING]

    def jobs(self) -> dict[asyncio.Task[None], Claim]:
        """The job of each attempt the claim loop started, with its claim, for the drain."""
        return {attempt.job: attempt.claim for attempt in self._held.values() if attempt.job is not None}
