"""Native mode keeps its secrets private and runs its services unprivileged (when started as root)."""

from __future__ import annotations

import os
import pwd
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from harness.stacks import Stack
from native import accounts
from native.plan import ROOT, SERVICE_USER, NativeConfig, build

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="the launcher drops privileges only when it runs as root")
PYTHON_SERVICES = ("api-gateway-1", "worker-service-1", "monitoring", "autoscaler-1")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(u) for u in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue  # exited meanwhile
            if f"\nPPid:\t{pid}\n" in status:
                kids.append(int(entry.name))
    return kids


def test_the_rendered_secrets_and_the_data_are_private(stack: Stack) -> None:
    state = stack.config.state
    for secret in (stack.config.conf_dir / "supervisord.conf", stack.config.conf_dir / "nginx.conf"):
        assert _mode(secret) == 0o600, secret
    assert stack.env["ADMIN_TOKEN"] in (stack.config.conf_dir / "supervisord.conf").read_text()
    for folder in (stack.config.conf_dir, stack.config.log_dir, stack.config.redis_dir):
        assert _mode(folder) == 0o700, folder
    # Other accounts may pass through the state folder to their own part, not list it.
    assert _mode(state) & 0o066 == 0
    data = [p for p in stack.config.redis_dir.rglob("*") if p.is_file()]
    assert data, "redis has written no data files"
    for path in data:
        assert _mode(path) & 0o077 == 0, f"{path} is {oct(_mode(path))}"
    # Redis's password is in its 0600 file, not on the command line every local account reads.
    assert _mode(stack.config.redis_auth) == 0o600
    assert stack.env["REDIS_PASSWORD"] in stack.config.redis_auth.read_text()
    cmdline = Path(f"/proc/{stack.pid('redis')}/cmdline").read_bytes().decode()
    assert stack.env["REDIS_PASSWORD"] not in cmdline, cmdline


@needs_root
def test_redis_and_nginx_workers_run_unprivileged(stack: Stack) -> None:
    service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    assert set(_uids(stack.pid("redis"))) == {service_uid}
    assert set(_uids(stack.pid("postgres"))) == {pwd.getpwnam("postgres").pw_uid}
    # nginx's master keeps root to bind port 80; every worker has dropped it.
    workers = _children(stack.pid("nginx"))
    assert workers
    for pid in workers:
        assert 0 not in _uids(pid), f"nginx worker {pid} runs as root"
    for path in stack.config.redis_dir.rglob("*"):
        assert path.lstat().st_uid == service_uid, path


@needs_root
def test_python_services_run_as_the_service_account(stack: Stack) -> None:
    if not accounts.can_reach(SERVICE_USER, read=(Path(sys.executable), ROOT / "core" / "settings.py")):
        pytest.skip(f"{SERVICE_USER} cannot read {Path(sys.executable).resolve()}: the launcher runs them as root")
    service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    for program in PYTHON_SERVICES:
        assert set(_uids(stack.pid(program))) == {service_uid}, program
    # The autoscaler's account reaches supervisord, to start and stop workers.
    assert stack.config.supervisor_socket.stat().st_uid == service_uid


@needs_root
def test_each_program_runs_as_the_service_account_only_where_it_can() -> None:
    """A state folder or an interpreter the account cannot reach (e.g. under a 0700 /root) keeps
    those programs on root, so the stack still starts; the rest still drop privileges."""
    private = Path(tempfile.mkdtemp(prefix="ss-private-"))  # 0700, like /root
    open_dir = Path(tempfile.mkdtemp(prefix="ss-open-"))
    open_dir.chmod(0o755)
    try:
        hidden_python = private / "python3"
        hidden_python.write_text("")

        def settled(state: Path, interpreter: Path) -> dict[str, str | None]:
            env = {**os.environ, "STATE_DIR": str(state), "REDIS_PASSWORD": "x" * 16, "POSTGRES_PASSWORD": "y" * 16}
            plan = build(NativeConfig.from_env(ROOT, {**env, "ADMIN_TOKEN": "z" * 16}), resolve_binaries=False)
            accounts.settle(plan, interpreter)
            return {p.service: p.user for p in (*plan.programs, plan.migrate)}

        reachable = settled(open_dir / "var", Path("/usr/bin/python3"))
        assert reachable["redis"] == reachable["worker-service"] == reachable["migrate"] == SERVICE_USER
        assert reachable["postgres"] == "postgres"
        assert reachable["nginx"] is None  # root: it binds port 80; its workers drop to www-data

        hidden = settled(private / "var", hidden_python)
        assert hidden["redis"] is hidden["worker-service"] is hidden["migrate"] is hidden["autoscaler"] is None
        assert hidden["postgres"] == "postgres"
    finally:
        for folder in (private, open_dir):
            for path in sorted(folder.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            folder.rmdir()
