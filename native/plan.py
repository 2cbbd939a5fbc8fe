"""Turns docker-compose.yml into the native process plan: the same services, commands and
environment, with the infrastructure images mapped to this machine's binaries.

Compose runs `python -m <service>` in containers reached by service name; here the same
commands run as local processes on loopback ports, under supervisord. Replica counts come
from the compose file (`deploy.replicas`), overridable as `GATEWAYS` / `WORKERS`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.settings import Published, default
from native import compose

ROOT = Path(__file__).resolve().parent.parent

#: Compose services whose replica count an environment variable overrides.
REPLICA_OVERRIDES = {"api-gateway": "GATEWAYS", "worker-service": "WORKERS"}
#: The service the autoscaler and `scale` resize; it gets MAX_WORKERS slots, the first N started.
SCALABLE = "worker-service"
#: nginx's container ports and what each fronts (see nginx/nginx.conf.j2).
NGINX_ROLES = {80: "lb", 8000: "api-gateway", 8001: "worker-service"}
#: The system account redis-server and the Python services run as when the launcher is root
#: (native/accounts.py creates it); root keeps only nginx's master, which binds port 80.
SERVICE_USER = "serverless-scaling"


def _int(variables: dict[str, str], name: str, default: int) -> int:
    raw = variables.get(name, "")
    try:
        return int(raw) if raw != "" else default
    except ValueError as exc:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from exc


@dataclass
class NativeConfig:
    root: Path
    variables: dict[str, str]
    state: Path
    bind: str
    lb_port: int
    gateway_port: int
    worker_port: int
    monitor_port: int
    redis_port: int
    postgres_port: int
    replica_port_base: int
    max_workers: int
    rate_limit_rps: int
    rate_limit_burst: int
    conn_per_client: int

    @classmethod
    def from_env(cls, root: Path = ROOT, environ: dict[str, str] | None = None) -> NativeConfig:
        # Compose's precedence: the shell's environment wins over `.env`.
        variables = {**compose.read_dotenv(root / ".env"), **(os.environ if environ is None else environ)}
        state = Path(variables.get("STATE_DIR") or root / "var").resolve()
        published = Published.from_variables(variables)
        return cls(
            root=root,
            variables=variables,
            state=state,
            bind=published.bind_address,
            lb_port=published.lb_port,
            gateway_port=published.gateway_port,
            worker_port=published.worker_port,
            monitor_port=published.monitor_port,
            redis_port=published.redis_port,
            postgres_port=published.postgres_port,
            replica_port_base=published.replica_port_base,
            max_workers=_int(variables, "MAX_WORKERS", default("max_workers")),
            rate_limit_rps=published.rate_limit_rps,
            rate_limit_burst=published.rate_limit_burst,
            conn_per_client=published.conn_per_client,
        )

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def log_dir(self) -> Path:
        return self.state / "log"

    @property
    def conf_dir(self) -> Path:
        return self.state / "conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def redis_dir(self) -> Path:
        """Redis's data and its unix socket: owned by the account Redis and the services run as."""
        return self.state / "redis"

    @property
    def redis_auth(self) -> Path:
        """redis-server's password, in a 0600 file it reads at start (not on its command line)."""
        return self.redis_dir / "auth.conf"

    @property
    def redis_socket(self) -> Path:
        return self.redis_dir / "redis.sock"


@dataclass
class Program:
    """One supervisord program: a process of a compose service."""

    name: str
    service: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    autostart: bool = True
    port: int | None = None
    health_path: str | None = None
    user: str | None = None
    stopsignal: str = "TERM"
    stopwaitsecs: int = 10
    priority: int = 100

    @property
    def infra(self) -> bool:
        return self.service in ("redis", "postgres", "nginx")


@dataclass
class Plan:
    config: NativeConfig
    services: dict[str, Any]
    programs: list[Program]
    migrate: Program
    postgres_user: str
    postgres_db: str
    postgres_password: str
    #: what redis-server reads from config.redis_auth (compose passes it as --requirepass)
    redis_password: str | None
    listeners: dict[str, int]
    #: The account of redis-server, the Python services and the migration; None: the invoking user.
    service_user: str | None = None

    def program(self, name: str) -> Program:
        return next(p for p in self.programs if p.name == name)

    def of(self, service: str) -> list[Program]:
        return [p for p in self.programs if p.service == service]

    def upstream_ports(self, service: str) -> list[int]:
        return [p.port for p in self.of(service) if p.port is not None]

    def python_programs(self) -> list[Program]:
        """The Python services and the migration: what needs the interpreter and the checkout."""
        return [p for p in (*self.programs, self.migrate) if not p.infra]

    def ports_to_bind(self) -> dict[int, str]:
        ports = {p.port: p.name for p in self.programs if p.port is not None}
        ports |= {port: f"nginx ({role})" for role, port in self.listeners.items()}
        return ports


def pg_bindir() -> Path:
    try:
        out = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit("PostgreSQL not found: pg_config --bindir failed (apt-get install postgresql)") from exc
    return Path(out.strip())


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise SystemExit(f"{name} not found on PATH (apt-get install {name})")
    return found


def redis_socket_url(url: str, address: str, socket: Path) -> str:
    """The services reach this host's own Redis through its unix socket: the same server,
    password and database, without the loopback TCP stack (which costs Redis CPU on every submission)."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.netloc.rpartition("@")[2] != address:
        return url  # someone else's Redis
    credentials = parts.netloc.rpartition("@")[0]
    return f"unix://{credentials + '@' if credentials else ''}{socket}?db={parts.path.strip('/') or 0}"


def build(config: NativeConfig, *, resolve_binaries: bool = True) -> Plan:
    v = config.variables
    native_vars = {
        **v,
        "REDIS_ADDRESS": f"127.0.0.1:{config.redis_port}",
        "POSTGRES_ADDRESS": f"127.0.0.1:{config.postgres_port}",
    }
    services: dict[str, Any] = compose.interpolate(compose.load(config.root / "docker-compose.yml"), native_vars)
    services = services["services"]

    listeners = {NGINX_ROLES[container]: int(host) for host, container in compose.container_ports(services["nginx"])}
    # Inside Compose, services reach each other by name; here through nginx's listeners.
    host_map = {
        "worker-service:8001": f"127.0.0.1:{listeners['worker-service']}",
        "api-gateway:8000": f"127.0.0.1:{listeners['api-gateway']}",
    }

    def native_env(service: dict[str, Any]) -> dict[str, str]:
        env = compose.environment(service)
        for key, value in env.items():
            for name, addr in host_map.items():
                value = value.replace(f"//{name}", f"//{addr}")
            env[key] = value
        if "REDIS_URL" in env:
            env["REDIS_URL"] = redis_socket_url(env["REDIS_URL"], native_vars["REDIS_ADDRESS"], config.redis_socket)
        return env

    which = _binary if resolve_binaries else (lambda name: name)
    bindir = pg_bindir() if resolve_binaries else Path("/usr/lib/postgresql/15/bin")
    as_root = os.geteuid() == 0
    service_user = SERVICE_USER if as_root else None
    programs: list[Program] = []

    redis_args = compose.command(services["redis"])[1:]
    # Every local account reads a command line (`ps`): the password moves to a 0600 file.
    redis_password = None
    if "--requirepass" in redis_args:
        at = redis_args.index("--requirepass")
        redis_password = redis_args[at + 1]
        redis_args = redis_args[:at] + redis_args[at + 2 :]
    programs.append(
        Program(
            name="redis",
            service="redis",
            command=[
                which("redis-server"),
                str(config.redis_auth),
                *redis_args,
                "--port",
                str(config.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(config.redis_dir),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--unixsocket",
                str(config.redis_socket),
                "--unixsocketperm",
                "700",
            ],
            port=config.redis_port,
            user=service_user,
            priority=10,
        )
    )

    pg_env = compose.environment(services["postgres"])
    programs.append(
        Program(
            name="postgres",
            service="postgres",
            command=[
                str(bindir / "postgres"),
                "-D",
                str(config.state / "pgdata"),
                "-p",
                str(config.postgres_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ],
            port=config.postgres_port,
            # Postgres refuses to run as root.
            user="postgres" if as_root else None,
            stopsignal="INT",  # "fast" shutdown: roll back open transactions, checkpoint, exit
            stopwaitsecs=30,
            priority=10,
        )
    )

    python = sys.executable
    next_port = config.replica_port_base
    migrate: Program | None = None
    for name, service in services.items():
        cmd = compose.command(service)
        if not cmd or cmd[0] != "python" or "load-test" in (service.get("profiles") or []):
            continue
        env = native_env(service)
        if service.get("restart") == "no":
            migrate = Program(name=name, service=name, command=[python, *cmd[1:]], env=env, user=service_user)
            continue
        if name == "autoscaler":
            # Native mode's engine is supervisord: its control socket replaces the Docker API proxy.
            env |= {"AUTOSCALE_ENGINE": "native", "SUPERVISOR_SOCKET": str(config.supervisor_socket)}
        published = compose.container_ports(service)
        count = (
            _int(v, REPLICA_OVERRIDES.get(name, ""), compose.replicas(service))
            if name in REPLICA_OVERRIDES
            else compose.replicas(service)
        )
        slots = max(count, config.max_workers) if name == SCALABLE else count
        health = "/api/health" if name == "monitoring" else "/health"
        for index in range(1, slots + 1):
            if published:
                port = int(published[0][0])
            else:
                next_port += 1
                port = next_port
            program_name = name if slots == 1 and published else f"{name}-{index}"
            programs.append(
                Program(
                    name=program_name,
                    service=name,
                    command=[python, *cmd[1:]],
                    env={
                        **env,
                        "HOST": "127.0.0.1" if not published else config.bind,
                        "PORT": str(port),
                        "REPLICA_ID": program_name,
                    },
                    autostart=index <= count,
                    port=port,
                    health_path=health,
                    user=service_user,
                    stopwaitsecs=int(float(env.get("SHUTDOWN_GRACE_SECONDS") or default("shutdown_grace_seconds")))
                    + 15,
                    priority=20,
                )
            )
    if migrate is None:
        raise SystemExit("docker-compose.yml has no one-shot migrate service")

    programs.append(
        Program(
            name="nginx",
            service="nginx",
            command=[which("nginx"), "-c", str(config.conf_dir / "nginx.conf"), "-g", "daemon off;"],
            stopsignal="QUIT",  # graceful: finish open requests
            priority=30,
        )
    )
    return Plan(
        config=config,
        services=services,
        programs=programs,
        migrate=migrate,
        postgres_user=pg_env.get("POSTGRES_USER", "serverless"),
        postgres_db=pg_env.get("POSTGRES_DB", "serverless"),
        postgres_password=pg_env["POSTGRES_PASSWORD"],
        redis_password=redis_password,
        listeners=listeners,
        service_user=service_user,
    )
