"""How the autoscaler changes the number of workers: one small interface, one implementation
per engine. `current()` counts the workers it has asked for (running or starting, not
draining); `scale_to(n, busy)` gets there, removing the least busy workers first.

Scale-in is always drain-aware: a removed worker gets SIGTERM, stops claiming, finishes its
in-flight tasks within its grace period and exits; nothing it holds is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from autoscaler.engine import Engine, EngineError
from native.supervisor import Supervisor, running, stopped

log = logging.getLogger(__name__)

WORKER_SERVICE = "worker-service"


class Actuator(Protocol):
    name: str

    async def current(self) -> int: ...

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        """Reach `count` workers; `busy` maps a worker's replica id to its in-flight tasks.
        Returns what it changed, in words."""
        ...


def _least_busy_first(names: list[str], busy: Mapping[str, int]) -> list[str]:
    # Idle first; among equals the newest (highest slot / last created) goes first.
    return sorted(names, key=lambda n: (busy.get(n, 0), -names.index(n)))


class NativeActuator:
    """supervisord's XML-RPC API: MAX_WORKERS slots (worker-service-1..N), some started."""

    name = "native"

    def __init__(self, socket_path: str) -> None:
        self.supervisor = Supervisor(Path(socket_path))
        self.prefix = f"{WORKER_SERVICE}-"

    async def _states(self) -> dict[str, str]:
        # The XML-RPC client blocks: keep it off the event loop.
        return await asyncio.to_thread(self.supervisor.states)

    async def current(self) -> int:
        return len(running(await self._states(), self.prefix))

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        states = await self._states()
        live = running(states, self.prefix)
        done: list[str] = []
        if count > len(live):
            for name in stopped(states, self.prefix)[: count - len(live)]:
                await asyncio.to_thread(self.supervisor.start, name, False)
                done.append(f"started {name}")
        elif count < len(live):
            for name in _least_busy_first(live, busy)[: len(live) - count]:
                # wait=False: SIGTERM now, the worker drains on its own; supervisord keeps a
                # SIGKILL only for a worker still there after stopwaitsecs (past its grace).
                await asyncio.to_thread(self.supervisor.stop, name, False)
                done.append(f"draining {name} ({busy.get(name, 0)} in flight)")
        return done


class RecommendActuator:
    """AUTOSCALE=recommend: counts live workers, changes nothing."""

    name = "recommend"

    def __init__(self, live_workers: int = 0) -> None:
        self.live_workers = live_workers

    async def current(self) -> int:
        return self.live_workers

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        return [f"would scale to {count} (recommend mode: nothing changed)"]


#: The Compose label that numbers a service's containers (`<project>-<service>-<number>`).
NUMBER_LABEL = "com.docker.compose.container-number"
#: Container states that count as a worker the autoscaler has asked for (a crashed worker that
#: its restart policy is bringing back is still one).
LIVE_STATES = frozenset({"running", "restarting"})
#: States a pool container starts from: made by `docker compose create`, or stopped by a scale-in.
SPARE_STATES = frozenset({"created", "exited"})


class PoolExhausted(RuntimeError):
    """More workers are wanted than there are worker-service containers to start; the autoscaler
    cannot create one, so the tick fails with the command that grows the pool."""


@dataclass(frozen=True)
class Replica:
    """One worker-service container as the Engine API's container list shows it."""

    id: str
    name: str
    number: int
    state: str

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> Replica:
        labels = summary.get("Labels") or {}
        number = int(labels.get(NUMBER_LABEL, "0"))
        return cls(str(summary["Id"]), str(summary["Names"][0]).lstrip("/"), number, str(summary.get("State", "")))


class ComposeActuator:
    """The Docker Engine API through docker-socket-proxy, which lets through only `/_ping`,
    `/version`, the container list and start/stop of `<project>-worker-service-<n>` containers
    (and, for the swarm actuator, the worker service's read and update; docker/socket-proxy/
    haproxy.cfg). It scales within a pool of worker-service containers that `./demo.sh` makes
    with `docker compose create --scale worker-service=MAX_WORKERS`:
    scaling out starts stopped ones (lowest number first, the ones `docker compose up --scale`
    keeps), scaling in stops the least busy (drain-aware) and leaves them for the next scale-out.
    It never creates or removes a container: when the pool is used up it says how to grow it."""

    name = "compose"

    def __init__(self, client: httpx.AsyncClient, project: str, stop_timeout: int = 35) -> None:
        self.engine = Engine(client)
        self.project = project
        self.stop_timeout = stop_timeout
        self._draining: set[str] = set()
        #: the running drains: the event loop keeps only a weak reference to a task
        self._drains: set[asyncio.Task[None]] = set()

    def _filters(self) -> str:
        labels = [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={WORKER_SERVICE}"]
        return json.dumps({"label": labels})

    async def _replicas(self) -> list[Replica]:
        """Every container of the pool, running or not, by container number."""
        params = {"all": "true", "filters": self._filters()}
        response = await self.engine.request("GET", "/containers/json", params=params)
        return sorted((Replica.from_summary(c) for c in response.json()), key=lambda r: r.number)

    def _live(self, replicas: list[Replica]) -> list[Replica]:
        return [r for r in replicas if r.state in LIVE_STATES and r.id not in self._draining]

    async def current(self) -> int:
        return len(self._live(await self._replicas()))

    async def drained(self) -> None:
        """Return once every stop that `scale_to` started in the background has ended."""
        await asyncio.gather(*self._drains)

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        replicas = await self._replicas()
        live = self._live(replicas)
        done: list[str] = []
        if count > len(live):
            spare = [r for r in replicas if r.state in SPARE_STATES and r.id not in self._draining]
            for replica in spare[: count - len(live)]:
                # 304: it was started meanwhile (by `docker compose start`, say); so much the better.
                await self.engine.request("POST", f"/containers/{replica.name}/start", accept=(304,))
                done.append(f"started {replica.name}")
            if len(live) + len(done) < count:
                note = (
                    f"worker pool exhausted: {len(replicas)} {WORKER_SERVICE} containers, {len(live) + len(done)} "
                    f"running, {count} wanted; the autoscaler cannot create containers, so make stopped ones with "
                    f"`docker compose create --no-recreate --scale {WORKER_SERVICE}={count} {WORKER_SERVICE}` "
                    "(./demo.sh makes MAX_WORKERS)"
                )
                if not done:
                    raise PoolExhausted(note)
                done.append(note)
        elif count < len(live):
            # The container's hostname is its short id: that is what its heartbeat's replica id holds.
            shorts = [r.id[:12] for r in live]
            for short in _least_busy_first(shorts, busy)[: len(live) - count]:
                replica = next(r for r in live if r.id.startswith(short))
                self._draining.add(replica.id)
                drain = asyncio.get_running_loop().create_task(self._drain(replica))
                self._drains.add(drain)
                drain.add_done_callback(self._drains.discard)
                done.append(f"draining {replica.name} ({busy.get(short, 0)} in flight)")
        return done

    async def _drain(self, replica: Replica) -> None:
        try:
            # SIGTERM, then SIGKILL only after stop_timeout (past the worker's drain grace); the
            # stopped container stays in the pool. 304: it had stopped already.
            await self.engine.request(
                "POST",
                f"/containers/{replica.name}/stop",
                accept=(304,),
                params={"t": self.stop_timeout},
                timeout=self.stop_timeout + 10,
            )
        except (httpx.HTTPError, EngineError) as exc:
            log.warning("could not stop worker container %s: %s", replica.name, exc)
        finally:
            self._draining.discard(replica.id)
