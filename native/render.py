"""Renders the configuration files of the native stack (and the Compose nginx config)."""

from __future__ import annotations

import os
import pwd
import shlex
from pathlib import Path
from typing import Any

import jinja2

from core.settings import Published
from native import accounts
from native.plan import NGINX_ROLES, ROOT, Plan, Program

TEMPLATE = ROOT / "nginx" / "nginx.conf.j2"
COMPOSE_NGINX = ROOT / "nginx" / "compose.conf"


def _nginx_template() -> jinja2.Template:
    # An nginx config, not HTML: escaping would corrupt it. Its inputs are our own settings.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), keep_trailing_newline=True)  # noqa: S701
    return env.get_template(TEMPLATE.name)


def nginx_native(plan: Plan) -> str:
    cfg = plan.config
    return _nginx_template().render(
        mode="native",
        # Workers must not run as root; they only talk TCP on loopback, so any account works.
        user="www-data" if os.geteuid() == 0 else None,
        worker_processes="auto",
        pid=cfg.run_dir / "nginx.pid",
        error_log=cfg.log_dir / "nginx-error.log",
        access_log="off",
        temp_dir=cfg.state / "nginx",
        rate_limit_rps=cfg.rate_limit_rps,
        rate_limit_burst=cfg.rate_limit_burst,
        conn_per_client=cfg.conn_per_client,
        resolver=None,
        upstreams={
            "api_gateway": [f"127.0.0.1:{p}" for p in plan.upstream_ports("api-gateway")],
            "worker_service": [f"127.0.0.1:{p}" for p in plan.upstream_ports("worker-service")],
        },
        listen_host=f"{cfg.bind}:",
        ports={_PORT_NAMES[role]: port for role, port in plan.listeners.items()},
    )


#: nginx's roles (native.plan.NGINX_ROLES) as the template names their ports.
_PORT_NAMES = {"lb": "lb", "api-gateway": "gateway", "worker-service": "worker"}
_DEFAULTS = Published()
#: Compose's nginx has its limits fixed when nginx/compose.conf is rendered (the official nginx
#: image cannot branch on env vars): native mode's RATE_LIMIT_RPS / RATE_LIMIT_BURST defaults.
COMPOSE_RATE_LIMIT = (_DEFAULTS.rate_limit_rps, _DEFAULTS.rate_limit_burst)
#: Where nginx finds the replicas in Compose: service names on Docker's network, container ports.
COMPOSE_UPSTREAMS = {"api_gateway": "api-gateway:8000", "worker_service": "worker-service:8001"}
#: Docker's embedded DNS server, inside every container on a user-defined network.
DOCKER_DNS = "127.0.0.11"


def nginx_compose(
    rate_limit_rps: int = COMPOSE_RATE_LIMIT[0],
    rate_limit_burst: int = COMPOSE_RATE_LIMIT[1],
    *,
    conn_per_client: int = _DEFAULTS.conn_per_client,
    resolver: str = DOCKER_DNS,
    upstreams: dict[str, str] | None = None,
    listen_host: str = "",
    ports: dict[str, int] | None = None,
    pid: str = "/var/run/nginx.pid",
    temp_dir: str | None = None,
) -> str:
    """The Compose nginx config; the keyword arguments exist so tests can run it on free ports."""
    return _nginx_template().render(
        mode="compose",
        # The official image's master runs as root and its workers as the compiled-in `nginx` user.
        user=None,
        worker_processes="auto",
        pid=pid,
        # Containers log to stderr: `docker compose logs nginx`.
        error_log="stderr",
        access_log="off",
        temp_dir=temp_dir,
        rate_limit_rps=rate_limit_rps,
        rate_limit_burst=rate_limit_burst,
        conn_per_client=conn_per_client,
        resolver=resolver,
        upstreams={name: [server] for name, server in (upstreams or COMPOSE_UPSTREAMS).items()},
        listen_host=listen_host,
        ports=ports or {_PORT_NAMES[role]: port for port, role in NGINX_ROLES.items()},
    )


def _ini_value(value: str) -> str:
    # supervisord expands %(name)s in its config: a literal % must be doubled.
    return value.replace("%", "%%")


def _program(program: Program, plan: Plan) -> str:
    cfg = plan.config
    lines = [
        f"[program:{program.name}]",
        f"command={_ini_value(shlex.join(program.command))}",
        f"directory={cfg.root}",
        f"autostart={'true' if program.autostart and program.infra else 'false'}",
        # Like Compose's `restart: unless-stopped`: a crashed or killed process comes back.
        "autorestart=true",
        "startsecs=1",
        "startretries=1000",
        f"stopsignal={program.stopsignal}",
        f"stopwaitsecs={program.stopwaitsecs}",
        "stopasgroup=true",
        "killasgroup=true",
        f"priority={program.priority}",
        f"stdout_logfile={cfg.log_dir / (program.name + '.log')}",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=2",
        "redirect_stderr=true",
    ]
    env = program.env
    if program.user:
        lines.append(f"user={program.user}")
        # supervisord switches the uid but keeps its own HOME (root's): libraries that look there
        # (asyncpg for ~/.postgresql client certificates) would fail on a 0700 /root.
        home = pwd.getpwnam(program.user).pw_dir if program.user != "root" else "/root"
        env = {"HOME": home, "USER": program.user, "LOGNAME": program.user, **env}
    if env:
        pairs = ",".join(f'{k}="{_ini_value(v)}"' for k, v in sorted(env.items()))
        lines.append(f"environment={pairs}")
    return "\n".join(lines)


def supervisord(plan: Plan) -> str:
    cfg = plan.config
    # The autoscaler starts and stops workers through this socket: it is the autoscaler's account's.
    scaler = next((p.user for p in plan.programs if p.service == "autoscaler" and p.user), None)
    owner = f"chown={scaler}:{scaler}\n" if scaler else ""
    head = f"""; Generated by native/render.py from docker-compose.yml; do not edit.
[unix_http_server]
file={cfg.supervisor_socket}
chmod=0700
{owner}
[supervisord]
logfile={cfg.log_dir / "supervisord.log"}
pidfile={cfg.run_dir / "supervisord.pid"}
childlogdir={cfg.log_dir}
directory={cfg.root}
minfds=4096
identifier=serverless-scaling
; Inherited by every program: Redis's data files, logs and nginx's temp files are private.
umask=077

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{cfg.supervisor_socket}
"""
    return head + "\n" + "\n\n".join(_program(p, plan) for p in plan.programs) + "\n"


def _folder(path: Path, mode: int) -> None:
    # Explicit modes: neither the caller's umask nor an earlier run decides who gets in.
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    path.chmod(mode)


def _secret_file(path: Path, text: str) -> None:
    """Written 0600 from its first byte (the configs hold the admin token and both passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _redis_auth(password: str | None) -> str:
    if password is None:
        return ""
    quoted = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'requirepass "{quoted}"\n'


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for parent, folders, files in os.walk(path):
        for name in (parent, *(os.path.join(parent, n) for n in (*folders, *files))):
            os.chown(name, uid, gid, follow_symlinks=False)


def write_all(plan: Plan) -> None:
    cfg = plan.config
    as_root = os.geteuid() == 0
    # As root, postgres, the service account and nginx's workers each pass through the state
    # folder to their own part of it (0711: no listing); otherwise all is the invoking user's.
    passage = 0o711 if as_root else 0o700
    _folder(cfg.state, passage)
    _folder(cfg.conf_dir, 0o700)  # secrets, read by supervisord and nginx's master (root)
    _folder(cfg.log_dir, 0o700)  # written by supervisord and nginx's master
    _folder(cfg.run_dir, passage)  # supervisord's socket, for the autoscaler
    _folder(cfg.state / "nginx", passage)  # nginx's master makes its workers' temp folders here
    _folder(cfg.redis_dir, 0o700)
    _secret_file(cfg.redis_auth, _redis_auth(plan.redis_password))
    if as_root:
        redis_user = plan.program("redis").user
        uid, gid = accounts.ids(redis_user) if redis_user else (0, 0)
        _chown_tree(cfg.redis_dir, uid, gid)  # also data an earlier run left as another account
    _secret_file(cfg.conf_dir / "nginx.conf", nginx_native(plan))
    _secret_file(cfg.conf_dir / "supervisord.conf", supervisord(plan))


def summary(plan: Plan) -> dict[str, Any]:
    return {p.name: {"command": p.command, "port": p.port} for p in plan.programs}
