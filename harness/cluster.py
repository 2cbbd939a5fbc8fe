"""A real Redis Cluster on loopback, for tests and benches: N `redis-server --cluster-enabled yes`
masters in a temporary directory, joined by `redis-cli --cluster create`, no replicas, no
persistence. Used as a context manager; the servers and the directory always go at its end.

Service runs one of the project's services (a gateway, a worker) as a plain process with the
environment it is given, e.g. pointed at such a cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import TracebackType

import httpx
from redis import Redis
from redis.exceptions import RedisError

from harness.stacks import free_port, wait_for


class LocalCluster:
    def __init__(self, nodes: int = 3, *, password: str | None = None) -> None:
        self.ports = [free_port() for _ in range(nodes)]
        # The cluster bus listens on a port of its own: by default port + 10000, which may be taken.
        self.bus_ports = [free_port() for _ in range(nodes)]
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="ss-cluster-", dir="/tmp"))
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A URL of one node: a cluster client learns the others from it."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> Redis:
        """A plain client of one node (its own keys only)."""
        return Redis(host="127.0.0.1", port=port, password=self.password, decode_responses=True)

    def start(self) -> LocalCluster:
        try:
            for port, bus in zip(self.ports, self.bus_ports, strict=True):
                self.processes.append(self._server(port, bus))
            for port, process in zip(self.ports, self.processes, strict=True):
                wait_for(partial(self._pings, port, process), 10, f"redis-server on {port}")
            auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
            nodes = [f"127.0.0.1:{p}" for p in self.ports]
            create = subprocess.run(
                ["redis-cli", *auth, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
            wait_for(self._ready, 20, "every node to report cluster_state:ok")
        except BaseException:
            self.stop()
            raise
        return self

    def _server(self, port: int, bus: int) -> subprocess.Popen[bytes]:
        args = [
            "redis-server",
            "--port",
            str(port),
            "--cluster-port",
            str(bus),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.dir / f"nodes-{port}.conf"),
            "--dir",
            str(self.dir),
            "--appendonly",
            "no",
            "--save",
            "",
        ]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        with (self.dir / f"redis-{port}.log").open("wb") as log:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def _pings(self, port: int, process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            log = (self.dir / f"redis-{port}.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server on {port} exited ({process.returncode}):\n{log[-2000:]}")
        with self.node(port) as client:
            try:
                return bool(client.ping())
            except RedisError:  # not listening yet
                return False

    def _ready(self) -> bool:
        for port in self.ports:
            with self.node(port) as client:
                info = str(client.execute_command("CLUSTER", "INFO"))
                if "cluster_state:ok" not in info:
                    return False
        return True

    def keys_per_node(self) -> dict[int, int]:
        """DBSIZE of each node, by port."""
        counts = {}
        for port in self.ports:
            with self.node(port) as client:
                counts[port] = int(client.dbsize())
        return counts

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Service:
    """`python -m <module>` on a free loopback port, its output in `log`."""

    def __init__(self, module: str, name: str, env: dict[str, str], log: Path) -> None:
        self.module = module
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:  # the child holds its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port), "REPLICA_ID": name},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no drain, no deregistration; its claims wait for the reaper."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
