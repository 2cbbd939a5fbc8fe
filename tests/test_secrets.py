"""Placeholder or short secrets are refused, with the same rule in Python and in demo.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings, weak_secret
from native.plan import ROOT

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

GOOD = "0123456789abcdef"  # 16 characters: the shortest accepted
CASES = ["replace-with-a-random-secret", "REPLACE-WITH-A-RANDOM-SECRET-PLEASE", "short", "0123456789abcde", "", GOOD]


def _shell_verdict(value: str) -> bool:
    """Whether scripts/common.sh's check_secrets accepts `value` as all three secrets."""
    script = f'source "{ROOT}/scripts/common.sh"; ROOT=/nonexistent; check_secrets'
    env = {**os.environ, "REDIS_PASSWORD": value or "", "POSTGRES_PASSWORD": GOOD * 2, "ADMIN_TOKEN": GOOD * 2}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0 or "refusing to start with weak secrets" in result.stderr, result.stderr
    return result.returncode == 0


@pytest.mark.parametrize("value", CASES)
def test_python_and_the_shell_apply_one_rule(value: str) -> None:
    assert (weak_secret(value) is None) == (value == GOOD) == _shell_verdict(value)


def test_the_native_launcher_refuses_the_example_placeholders(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {
        **os.environ,
        "STATE_DIR": str(state),
        "REDIS_PASSWORD": "replace-with-a-random-secret",
        "POSTGRES_PASSWORD": "short",
        "ADMIN_TOKEN": GOOD,
    }
    result = subprocess.run(
        [sys.executable, "-m", "native", "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "REDIS_PASSWORD is the placeholder from .env.example" in result.stderr
    assert "POSTGRES_PASSWORD is shorter than 16 characters" in result.stderr
    assert not state.exists()  # refused before anything was written or started


def test_services_refuse_a_weak_admin_token_but_allow_none() -> None:
    with pytest.raises(ValidationError, match="ADMIN_TOKEN is the placeholder"):
        Settings(admin_token="replace-with-a-random-secret")
    with pytest.raises(ValidationError, match="shorter than 16"):
        Settings(admin_token="letmein")
    assert Settings(admin_token="").admin_token == ""  # the admin API stays locked
    assert Settings(admin_token=GOOD).admin_token == GOOD
