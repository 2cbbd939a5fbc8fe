"""First-time setup of the native PostgreSQL cluster (what the postgres image's entrypoint does)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from native.plan import Plan, pg_bindir


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _postgres_can_reach(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    return subprocess.run(_as_postgres(["test", "-x", str(path)]), check=False).returncode == 0


def outside_dir(plan: Plan) -> Path:
    """Where the data lives when the postgres account cannot reach the project folder."""
    digest = hashlib.sha256(str(plan.config.state).encode()).hexdigest()[:12]
    return Path("/var/lib/serverless-scaling") / digest


def data_dir(plan: Plan) -> Path:
    return plan.config.state / "pgdata"


def ensure_cluster(plan: Plan) -> bool:
    """initdb once; returns True when it created a new cluster."""
    pgdata = data_dir(plan)
    if (pgdata / "PG_VERSION").exists():
        return False
    if pgdata.is_symlink() or pgdata.exists():
        target = pgdata.resolve()
        if target != pgdata and not (target / "PG_VERSION").exists():
            shutil.rmtree(target, ignore_errors=True)
        pgdata.unlink() if pgdata.is_symlink() else shutil.rmtree(pgdata)
    if _postgres_can_reach(plan.config.state):
        pgdata.mkdir(mode=0o700, parents=True)
        real = pgdata
    else:
        # e.g. a clone under /root (mode 700): keep the data outside, linked from the state folder.
        real = outside_dir(plan) / "pgdata"
        for folder in (real.parent.parent, real.parent):
            folder.mkdir(mode=0o755, exist_ok=True)
            folder.chmod(0o755)
        real.mkdir(mode=0o700, exist_ok=True)
        pgdata.symlink_to(real)
    if os.geteuid() == 0:
        shutil.chown(real, "postgres", "postgres")
    with tempfile.NamedTemporaryFile("w", delete=False) as pwfile:
        pwfile.write(plan.postgres_password + "\n")
    try:
        if os.geteuid() == 0:
            shutil.chown(pwfile.name, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [
                    str(pg_bindir() / "initdb"),
                    "-D",
                    str(real),
                    "-U",
                    plan.postgres_user,
                    f"--pwfile={pwfile.name}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"initdb failed:\n{exc.stdout}\n{exc.stderr}") from exc
    finally:
        os.unlink(pwfile.name)
    return True


def admin_dsn(plan: Plan) -> str:
    cfg = plan.config
    return f"postgresql://{plan.postgres_user}:{plan.postgres_password}@127.0.0.1:{cfg.postgres_port}/postgres"
