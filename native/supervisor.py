"""A small client for supervisord's XML-RPC API: the native stack's process manager."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path
from typing import Any, TypedDict, cast

from supervisor.xmlrpc import Faults, SupervisorTransport

RUNNING_STATES = {"RUNNING", "STARTING", "BACKOFF"}


class ProcessInfo(TypedDict):
    """The fields of supervisord's `getProcessInfo` answer that this project reads."""

    name: str
    statename: str
    #: 0 when not running
    pid: int
    #: epoch seconds of the last start (0 if never started)
    start: int
    #: the exit status of the last exit (meaningful once it stopped)
    exitstatus: int
    description: str


class Supervisor:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        transport = SupervisorTransport(None, None, f"unix://{socket_path}")
        # The host part is ignored: the transport speaks over the unix socket.
        self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        self._rpc: Any = self._proxy.supervisor

    def close(self) -> None:
        self._proxy("close")()

    def alive(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return cast(str, self._rpc.getState()["statename"]) == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def processes(self) -> list[ProcessInfo]:
        return cast(list[ProcessInfo], self._rpc.getAllProcessInfo())

    def process_info(self, name: str) -> ProcessInfo:
        return cast(ProcessInfo, self._rpc.getProcessInfo(name))

    def states(self) -> dict[str, str]:
        return {p["name"]: p["statename"] for p in self.processes()}

    def start(self, name: str, wait: bool = True) -> None:
        try:
            self._rpc.startProcess(name, wait)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.ALREADY_STARTED:
                raise

    def stop(self, name: str, wait: bool = True) -> None:
        try:
            self._rpc.stopProcess(name, wait)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.NOT_RUNNING:
                raise

    def pid(self, name: str) -> int:
        return self.process_info(name)["pid"]

    def shutdown(self) -> None:
        self._rpc.shutdown()


def running(states: dict[str, str], prefix: str) -> list[str]:
    return sorted((n for n, s in states.items() if n.startswith(prefix) and s in RUNNING_STATES), key=_slot)


def stopped(states: dict[str, str], prefix: str) -> list[str]:
    return sorted((n for n, s in states.items() if n.startswith(prefix) and s not in RUNNING_STATES), key=_slot)


def _slot(name: str) -> int:
    return int(name.rsplit("-", 1)[1])
