"""The unprivileged account the native services run as when the launcher runs as root.

Root starts supervisord, which keeps root only for nginx's master (it binds port 80; its workers
drop to www-data) and hands PostgreSQL to `postgres` and redis-server, the gateways, workers,
dashboard and autoscaler to SERVICE_USER. A service that is broken into then holds an account
that owns nothing but Redis's data.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from native.plan import Plan, Program


def ensure_user(name: str) -> None:
    """A system account without a home or a login shell, created once."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    options = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    options += ["--shell", "/usr/sbin/nologin"]
    result = subprocess.run(
        [useradd, *options, "--comment", "Serverless Scaling services", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        pwd.getpwnam(name)  # another launcher may have created it meanwhile
    except KeyError:
        raise SystemExit(f"could not create the system user {name}: {result.stderr.strip()}") from None


def ids(name: str) -> tuple[int, int]:
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def can_reach(user: str, *, read: tuple[Path, ...] = (), enter: tuple[Path, ...] = ()) -> bool:
    """Whether `user` can read `read` and pass through `enter` (nothing under a 0700 /root can)."""
    test: list[str] = []
    for flag, paths in (("-r", read), ("-x", enter)):
        for path in paths:
            test += [*(["-a"] if test else []), flag, str(path)]
    return subprocess.run(["runuser", "-u", user, "--", "test", *test], check=False).returncode == 0


def settle(plan: Plan, interpreter: Path = Path(sys.executable)) -> None:
    """Create the service account; a program it cannot run keeps the invoking user, with a warning."""
    user = plan.service_user
    if user is None:
        return
    ensure_user(user)
    cfg = plan.config
    cfg.state.mkdir(parents=True, exist_ok=True)
    cfg.state.chmod(0o711)  # what render.write_all sets: others may pass, not list
    if not can_reach(user, enter=(cfg.state,)):
        _fall_back(plan.of("redis"), f"{user} cannot enter {cfg.state}")
    # The interpreter's own files (e.g. pyenv's under /root) are as much needed as the checkout.
    if not can_reach(user, read=(interpreter, cfg.root / "core" / "settings.py")):
        _fall_back(plan.python_programs(), f"{user} cannot read {interpreter.resolve()} or {cfg.root}")


def _fall_back(programs: list[Program], why: str) -> None:
    for program in programs:
        program.user = None
    names = ", ".join(sorted({p.service for p in programs}))
    print(
        f"  warning: {why}, so {names} run as root. Keep the checkout and Python where other accounts"
        " can read them (e.g. /opt and /usr/bin/python3) to run them unprivileged.",
        file=sys.stderr,
    )
