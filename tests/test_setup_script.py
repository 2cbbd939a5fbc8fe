"""setup.sh deletes this project's data and nothing else; apt_install leaves no policy-rc.d behind.

Each test runs the scripts from a copy in a temporary project folder, so the checkout's own data
is never touched."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.stacks import wait_for
from native.plan import ROOT

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="apt_install and /var/lib need root")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with setup.sh and scripts/common.sh, and a `docker` that answers no engine."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "setup.sh", root / "setup.sh")
    shutil.copy(ROOT / "scripts" / "common.sh", root / "scripts" / "common.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    return root


def _run(root: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIR"}
    env["PATH"] = f"{root.parent / 'bin'}:{env['PATH']}"
    return subprocess.run(
        ["bash", str(root / "setup.sh"), *args],
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_state_dir_from_env_file_and_a_dangling_link_delete_only_this_projects_data(project: Path) -> None:
    tmp = project.parent
    state = tmp / "elsewhere"
    (state / "log").mkdir(parents=True)
    (project / ".env").write_text(f"ADMIN_TOKEN=x\nSTATE_DIR={state}\n")
    (project / "var").mkdir()
    (project / "var" / "keep").write_text("not this project's configured state")
    precious = tmp / "precious"
    precious.mkdir()
    (precious / "data").write_text("someone else's")
    # A link whose target is gone, inside a folder that is not ours.
    (state / "pgdata").symlink_to(precious / "pgdata")

    result = _run(project)
    assert result.returncode == 0, result.stderr
    assert not state.exists()
    assert not state.is_symlink()
    assert (precious / "data").read_text() == "someone else's"
    assert (project / "var" / "keep").exists()  # STATE_DIR from .env named the state folder
    assert (project / "setup.sh").exists()
    assert (project / ".env").exists()


def test_a_link_whose_whole_path_is_gone_does_not_delete_the_project(project: Path) -> None:
    state = project / "var"
    state.mkdir()
    (state / "pgdata").symlink_to(project.parent / "gone" / "deeper" / "pgdata")
    result = _run(project)
    assert result.returncode == 0, result.stderr
    assert not state.exists()
    assert (project / "setup.sh").exists()
    assert (project / "scripts" / "common.sh").exists()


def test_a_state_dir_holding_the_checkout_is_refused(project: Path) -> None:
    result = _run(project, extra_env={"STATE_DIR": str(project.parent)})
    assert result.returncode != 0
    assert "refusing" in result.stderr
    assert (project / "setup.sh").exists()


@needs_root
def test_postgres_data_outside_the_state_folder_goes_with_it_and_no_other(project: Path) -> None:
    state = project / "var"
    state.mkdir()

    def outside(of: Path) -> Path:
        # native/postgres.py outside_dir
        return Path("/var/lib/serverless-scaling") / hashlib.sha256(str(of).encode()).hexdigest()[:12]

    ours, theirs = outside(state.resolve()), outside(project.parent / "another-checkout" / "var")
    try:
        for folder in (ours, theirs):
            (folder / "pgdata").mkdir(parents=True)
            (folder / "pgdata" / "PG_VERSION").write_text("15\n")
        (state / "pgdata").symlink_to(ours / "pgdata")
        result = _run(project)
        assert result.returncode == 0, result.stderr
        assert not ours.exists()
        assert (theirs / "pgdata" / "PG_VERSION").exists()
    finally:
        shutil.rmtree(ours, ignore_errors=True)
        shutil.rmtree(theirs, ignore_errors=True)


def _apt_install(tmp_path: Path, apt_get: str) -> tuple[subprocess.Popen[str], Path]:
    """apt_install from scripts/common.sh with a stand-in apt-get and policy-rc.d path."""
    bin_dir = tmp_path / "apt-bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\n{apt_get}\n")
    (bin_dir / "apt-get").chmod(0o755)
    policy = tmp_path / "policy-rc.d"
    script = f'set -euo pipefail; source "{ROOT}/scripts/common.sh"; apt_install some-package'
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "POLICY_RC_D": str(policy)}
    return subprocess.Popen(
        ["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ), policy


@needs_root
def test_a_failed_apt_get_leaves_no_policy_rc_d(tmp_path: Path) -> None:
    proc, policy = _apt_install(tmp_path, 'test -x "$POLICY_RC_D" || exit 3; exit 100')
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "apt-get install some-package failed" in err
    assert not policy.exists()


@needs_root
def test_a_killed_install_leaves_no_policy_rc_d(tmp_path: Path) -> None:
    # apt-get is still running when the script that started it is killed (a closed terminal, a CI timeout).
    marker = tmp_path / "apt-started"
    proc, policy = _apt_install(tmp_path, f'touch "{marker}"; sleep 1; exit 0')
    wait_for(marker.exists, 10, "apt-get to start")
    assert policy.exists()
    proc.terminate()
    proc.communicate(timeout=10)
    # Removed when the install ends, whoever ended it.
    wait_for(lambda: not policy.exists(), 15, "policy-rc.d to go")
