"""The launcher's own commands: scale, status, logs, and its refusal of a busy port."""

from __future__ import annotations

import socket

import pytest

from harness.stacks import Stack, wait_for


@pytest.mark.usefixtures("restores_stack")
def test_scale_adds_and_removes_workers_at_run_time(stack: Stack) -> None:
    stack.native("scale", "3")
    wait_for(lambda: stack.live_workers() == 3, 30, "3 live workers")
    task_ids = [stack.submit("echo", {"i": i}) for i in range(30)]
    stack.wait_all_final(task_ids)
    stack.native("scale", "2")
    wait_for(lambda: stack.live_workers() == 2, 30, "back to 2 live workers")
    wait_for(lambda: stack.supervisor.states()["worker-service-3"] == "STOPPED", 30, "slot 3 to stop")


def test_status_lists_processes_and_health(stack: Stack) -> None:
    result = stack.native("status")
    assert "api-gateway-1" in result.stdout
    assert "RUNNING" in result.stdout
    assert '"redis": "healthy"' in result.stdout


def test_processes_are_named_for_their_service(stack: Stack) -> None:
    for program, module in (("api-gateway-1", "api_gateway"), ("worker-service-1", "worker_service")):
        with open(f"/proc/{stack.pid(program)}/cmdline", "rb") as cmdline:
            args = cmdline.read().split(b"\0")
        assert [b"-m", module.encode()] == args[1:3]


def test_a_busy_port_is_refused_by_name(stack: Stack) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        other = Stack({"LB_PORT": str(busy)})
        try:
            result = other.native("up", check=False, timeout=60)
        finally:
            other.down()
    assert result.returncode != 0
    assert f"{busy} (nginx (lb))" in result.stderr
    assert "already in use" in result.stderr
