"""Stopping, killing and starting the stack's replicas, in either engine: supervisord's programs
in native mode, containers in Compose mode. The scenarios and the test harness act through this,
so one script or test runs against both.

A replica's name is what its engine calls it: `worker-service-2` (supervisord) or
`serverless-scaling-worker-service-2` (Compose). `owner_of(worker_id)` maps a worker's heartbeat
id back to it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from core.settings import replica_of
from native.supervisor import Supervisor

WORKER_SERVICE = "worker-service"
GATEWAY_SERVICE = "api-gateway"


class Control(Protocol):
    engine: str

    def replicas(self, service: str, *, running_only: bool = True) -> list[str]: ...

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None: ...

    def stop(self, name: str) -> None:
        """SIGTERM, and wait until it has exited (a worker drains first)."""
        ...

    def start(self, name: str) -> None: ...

    def is_running(self, name: str) -> bool: ...

    def identity(self, name: str) -> str:
        """Changes when the replica is replaced or restarted (a pid, a container's start time)."""
        ...

    def owner_of(self, worker_id: str) -> str: ...

    def served_by(self, name: str) -> str:
        """What the replica puts in X-Served-By and its worker ids: its REPLICA_ID, or its hostname."""
        ...

    def close(self) -> None: ...


class NativeControl:
    engine = "native"

    def __init__(self, socket_path: Path) -> None:
        self.supervisor = Supervisor(socket_path)

    def replicas(self, service: str, *, running_only: bool = True) -> list[str]:
        states = self.supervisor.states()
        return sorted(
            n
            for n, s in states.items()
            if n.startswith(f"{service}-") and n[len(service) + 1 :].isdigit() and (s == "RUNNING" or not running_only)
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.kill(self.supervisor.pid(name), sig)

    def stop(self, name: str) -> None:
        self.supervisor.stop(name)

    def start(self, name: str) -> None:
        self.supervisor.start(name)

    def is_running(self, name: str) -> bool:
        return self.supervisor.states().get(name) == "RUNNING"

    def identity(self, name: str) -> str:
        return str(self.supervisor.pid(name))

    def owner_of(self, worker_id: str) -> str:
        # The replica id of a native worker is its supervisord program's name (REPLICA_ID).
        return replica_of(worker_id)

    def served_by(self, name: str) -> str:
        return name

    def close(self) -> None:
        self.supervisor.close()


class ComposeControl:
    """The docker CLI on one Compose project (its name and files, as `docker compose -p -f`)."""

    engine = "compose"

    def __init__(self, project: str, files: Sequence[Path], project_dir: Path, env: dict[str, str]) -> None:
        self.project = project
        self.files = list(files)
        self.project_dir = project_dir
        self.env = env

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        command = ["docker", "compose", "-p", self.project, "--project-directory", str(self.project_dir), *files]
        result = subprocess.run([*command, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def docker(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def replicas(self, service: str, *, running_only: bool = True) -> list[str]:
        # `docker ps` by label sees the autoscaler's replicas too (it labels them as Compose does).
        labels = [f"label=com.docker.compose.project={self.project}", f"label=com.docker.compose.service={service}"]
        filters = [arg for label in labels for arg in ("--filter", label)]
        out = self.docker("ps", *([] if running_only else ["-a"]), *filters, "--format", "{{.Names}}")
        return sorted(out.split(), key=lambda n: (len(n), n))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        # Sent from inside, as a crash or the OOM killer would: to Docker, `docker kill` is a manual
        # stop, after which `restart: unless-stopped` leaves the container down, where supervisord
        # restarts a killed program. The app services run under docker-init (`init: true`), which
        # exits with its child; the child is the service's process.
        script = (
            '[ "$(cat /proc/1/comm)" = docker-init ] || { echo "PID 1 is not docker-init" >&2; exit 1; }; '
            f"kill -s {signal.Signals(sig).name.removeprefix('SIG')} $(cat /proc/1/task/1/children)"
        )
        self.docker("exec", name, "sh", "-c", script)

    def stop(self, name: str) -> None:
        # Past the worker's drain grace (SHUTDOWN_GRACE_SECONDS) Docker sends SIGKILL, like supervisord.
        self.docker("stop", "--time", "40", name, timeout=90)

    def start(self, name: str) -> None:
        self.docker("start", name)

    def is_running(self, name: str) -> bool:
        return self._inspect(name)["State"]["Running"] is True

    def identity(self, name: str) -> str:
        return str(self._inspect(name)["State"]["StartedAt"])

    def owner_of(self, worker_id: str) -> str:
        # A container's worker id starts with its hostname, which is its short id.
        return str(self._inspect(worker_id.split("-", 1)[0])["Name"]).lstrip("/")

    def served_by(self, name: str) -> str:
        # REPLICA_ID is unset in containers: the replica id is "<hostname>-<pid>".
        return str(self._inspect(name)["Config"]["Hostname"])

    def _inspect(self, name: str) -> dict[str, Any]:
        # --type: a short id alone could name an image too.
        found: list[dict[str, Any]] = json.loads(self.docker("inspect", "--type", "container", name))
        return found[0]

    def close(self) -> None:
        pass
