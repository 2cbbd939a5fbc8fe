"""`python -m native up|down|status|scale N|logs [service]`: the native stack's launcher.

`python -m native render-compose-nginx` regenerates nginx/compose.conf, the Compose nginx config;
`python -m native ports` prints the published ports as NAME=port lines (demo.sh's messages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import asyncpg
import httpx
from redis import Redis
from redis.exceptions import RedisError

from core import db
from core.settings import weak_secret
from native import accounts, postgres, render
from native import plan as plan_mod
from native.plan import SCALABLE, Plan, Program
from native.supervisor import Supervisor, running, stopped

HEALTH_DEADLINE = 90.0
#: The secrets .env holds (scripts/common.sh SECRETS); none may be a placeholder or short.
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "ADMIN_TOKEN")


class Progress:
    """One line per step, with its time, so a user sees where start-up stands."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def step(self, label: str, check: Callable[[], bool], deadline: float = HEALTH_DEADLINE) -> None:
        self.done += 1
        start = time.monotonic()
        print(f"  [{self.done:2d}/{self.total}] {label:<38}", end="", flush=True)
        while not check():
            if time.monotonic() - start > deadline:
                print("FAILED")
                raise SystemExit(f"{label} did not become healthy within {deadline:.0f} s; see ./demo.sh logs")
            time.sleep(0.2)
        print(f"ok ({time.monotonic() - start:.1f} s)")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _http_ok(port: int, path: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def redis_ok(plan: Plan) -> Callable[[], bool]:
    password = plan.services["redis"]["environment"]["REDISCLI_AUTH"]

    def check() -> bool:
        try:
            return bool(
                Redis(host="127.0.0.1", port=plan.config.redis_port, password=password, socket_timeout=1).ping()
            )
        except RedisError:
            return False

    return check


def postgres_ok(plan: Plan) -> Callable[[], bool]:
    async def probe() -> None:
        await db.ensure_database(postgres.admin_dsn(plan), plan.postgres_db)

    def check() -> bool:
        try:
            asyncio.run(probe())
            return True
        except (*db.UNAVAILABLE_ERRORS, asyncpg.PostgresError):
            return False

    return check


def _migrate(plan: Plan) -> Callable[[], bool]:
    def run() -> bool:
        env = {**os.environ, **plan.migrate.env}
        user = plan.migrate.user
        command = ["runuser", "-u", user, "--", *plan.migrate.command] if user else plan.migrate.command
        result = subprocess.run(command, env=env, cwd=plan.config.root, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"migration failed:\n{result.stdout}{result.stderr}")
        return True

    return run


def _start_supervisord(plan: Plan) -> Supervisor:
    sup = Supervisor(plan.config.supervisor_socket)
    conf = plan.config.conf_dir / "supervisord.conf"
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], check=True, cwd=plan.config.root)
    deadline = time.monotonic() + 15
    while not sup.alive():
        if time.monotonic() > deadline:
            raise SystemExit(f"supervisord did not start; see {plan.config.log_dir / 'supervisord.log'}")
        time.sleep(0.1)
    return sup


def _workers_awaited(workers: list[Program], scalers: list[Program], fresh: bool) -> tuple[str, int]:
    """What a start waits for of the workers: its label and how many must answer healthy.

    With the autoscaler acting, the count is the autoscaler's (an already running one may have
    stopped any slot, or all of them at MIN_WORKERS=0): a start waits for MIN_WORKERS (at least
    1 on a fresh start) of the slots, any of them. Otherwise the count is the user's, and every
    worker started must answer.
    """
    if not workers:
        return "", 0
    env = scalers[0].env if scalers else {}
    if env.get("AUTOSCALE") == "on":
        need = min(len(workers), max(1 if fresh else 0, int(env.get("MIN_WORKERS") or 0)))
        return f"{SCALABLE}: any {need} (autoscaled)", need
    ports = f"{workers[0].port}" + (f"-{workers[-1].port}" if len(workers) > 1 else "")
    return f"{SCALABLE} x{len(workers)} :{ports}", len(workers)


def _healthy_workers(plan: Plan, need: int) -> Callable[[], bool]:
    # Every slot counts, started or not: the autoscaler chooses which ones run.
    checks = [_http_ok(p.port, p.health_path or "/health") for p in plan.of(SCALABLE) if p.port is not None]
    return lambda: sum(check() for check in checks) >= need


def _check_ports(plan: Plan) -> None:
    busy = [
        f"{port} ({who})" for port, who in sorted(plan.ports_to_bind().items()) if not _port_free("127.0.0.1", port)
    ]
    if busy:
        raise SystemExit(
            "port(s) already in use: " + ", ".join(busy) + "\n"
            "stop what uses them, or choose others, e.g. LB_PORT=8088 ./demo.sh (see README: Configuration)"
        )


def check_secrets(variables: dict[str, str]) -> None:
    problems = [f"{name} {why}" for name in SECRETS if (why := weak_secret(variables.get(name, "")))]
    if problems:
        raise SystemExit(
            "refusing to start with weak secrets in .env: " + "; ".join(problems) + ".\n"
            "Delete those lines and ./demo.sh writes random ones (a changed password needs ./setup.sh first:"
            " the existing data was made with the old one)."
        )


def up(plan: Plan) -> None:
    cfg = plan.config
    check_secrets(cfg.variables)
    accounts.settle(plan)
    sup = Supervisor(cfg.supervisor_socket)
    apps = [p for p in plan.programs if not p.infra and p.autostart]
    nginx = plan.program("nginx")
    running_already = sup.alive()
    if running_already:
        print("native stack already running; checking its health")
    else:
        _check_ports(plan)
        render.write_all(plan)
        if postgres.ensure_cluster(plan):
            print("  created the PostgreSQL cluster")
        sup = _start_supervisord(plan)
    workers = [p for p in apps if p.service == SCALABLE]
    scalers = [p for p in apps if p.service == "autoscaler"]
    services = [p for p in apps if p not in workers and p not in scalers]
    label, need = _workers_awaited(workers, scalers, fresh=not running_already)
    progress = Progress(total=5 + len(services) + (1 if need else 0) + len(scalers))
    progress.step(f"redis :{cfg.redis_port}", redis_ok(plan))
    progress.step(f"postgres :{cfg.postgres_port}", postgres_ok(plan))
    progress.step("schema migration", _migrate(plan))
    for program in (*services, *workers):
        sup.start(program.name, wait=False)
    sup.start(nginx.name, wait=False)
    for program in services:
        assert program.port is not None
        assert program.health_path is not None
        progress.step(f"{program.name} :{program.port}", _http_ok(program.port, program.health_path))
    if need:
        progress.step(label, _healthy_workers(plan, need))
    # The autoscaler starts last: from then on the worker count is its own, and it may stop a
    # worker that this start would otherwise still be waiting for.
    for program in scalers:
        assert program.port is not None
        assert program.health_path is not None
        sup.start(program.name, wait=False)
        progress.step(f"{program.name} :{program.port}", _http_ok(program.port, program.health_path))
    progress.step(f"nginx :{plan.listeners['lb']}", _http_ok(plan.listeners["lb"], "/nginx-health"))
    progress.step("end to end (GET /api/status)", _http_ok(plan.listeners["lb"], "/api/status"))
    print(f"  healthy in {time.monotonic() - progress.t0:.1f} s")


def down(plan: Plan) -> None:
    sup = Supervisor(plan.config.supervisor_socket)
    if not sup.alive():
        print("native stack is not running")
        return
    pid_file = plan.config.run_dir / "supervisord.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    sup.shutdown()
    deadline = time.monotonic() + 60
    while pid and _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    print("native stack stopped (data kept)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(plan: Plan) -> int:
    sup = Supervisor(plan.config.supervisor_socket)
    if not sup.alive():
        print("native stack is not running")
        return 3
    for proc in sup.processes():
        if proc["statename"] == "STOPPED" and proc["name"].startswith(SCALABLE):
            continue  # idle worker slots
        print(f"  {proc['name']:<20} {proc['statename']:<9} pid {proc['pid'] or '-':<8} {proc['description']}")
    try:
        response = httpx.get(f"http://127.0.0.1:{plan.listeners['lb']}/api/status", timeout=3)
        print(json.dumps(response.json(), indent=2))
    except httpx.HTTPError as exc:
        print(f"  /api/status unreachable: {exc}")
        return 1
    return 0 if response.status_code == 200 else 1


def scale(plan: Plan, count: int) -> None:
    slots = plan.of(SCALABLE)
    if not 0 <= count <= len(slots):
        raise SystemExit(f"workers must be 0..{len(slots)} (MAX_WORKERS)")
    sup = Supervisor(plan.config.supervisor_socket)
    if not sup.alive():
        raise SystemExit("native stack is not running; start it with ./demo.sh")
    states = sup.states()
    live = running(states, f"{SCALABLE}-")
    if count > len(live):
        for name in stopped(states, f"{SCALABLE}-")[: count - len(live)]:
            sup.start(name, wait=False)
    else:
        # Highest slots first; each gets SIGTERM and drains its in-flight tasks before exiting.
        for name in list(reversed(live))[: len(live) - count]:
            sup.stop(name, wait=False)
    print(f"{SCALABLE}: {len(live)} -> {count}")


def logs(plan: Plan, service: str | None, follow: bool) -> None:
    names = [p.name for p in plan.programs if service is None or p.service == service or p.name == service]
    if not names:
        raise SystemExit(f"no service {service!r}; one of: {', '.join(sorted({p.service for p in plan.programs}))}")
    files = [str(plan.config.log_dir / f"{n}.log") for n in names if (plan.config.log_dir / f"{n}.log").exists()]
    if not files:
        print("no logs yet")
        return
    # Hand the terminal to tail, as `docker compose logs` does.
    os.execvp("tail", ["tail", "-n", "50", *(["-F"] if follow else []), *files])  # noqa: S606


def published_ports(config: plan_mod.NativeConfig) -> dict[str, int]:
    return {
        "LB_PORT": config.lb_port,
        "GATEWAY_PORT": config.gateway_port,
        "WORKER_PORT": config.worker_port,
        "MONITOR_PORT": config.monitor_port,
    }


def _render_compose_nginx(rps: int, burst: int, check: bool) -> int:
    text = render.nginx_compose(rps, burst)
    if check:
        fresh = render.COMPOSE_NGINX.exists() and render.COMPOSE_NGINX.read_text() == text
        verdict = "up to date" if fresh else "stale: run python -m native render-compose-nginx"
        print(f"{render.COMPOSE_NGINX} is {verdict}")
        return 0 if fresh else 1
    render.COMPOSE_NGINX.write_text(text)
    print(f"wrote {render.COMPOSE_NGINX}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m native", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the stack and wait until healthy")
    sub.add_parser("down", help="stop everything, keep data")
    sub.add_parser("status", help="processes and /api/status")
    scale_p = sub.add_parser("scale", help="run N workers")
    scale_p.add_argument("count", type=int)
    logs_p = sub.add_parser("logs", help="recent log lines of a service (or all)")
    logs_p.add_argument("service", nargs="?")
    logs_p.add_argument("-f", "--follow", action="store_true")
    sub.add_parser("plan", help="print the process plan derived from docker-compose.yml")
    sub.add_parser("ports", help="print the published ports (.env and the environment over the defaults)")
    nginx_p = sub.add_parser("render-compose-nginx", help="regenerate nginx/compose.conf from the template")
    nginx_p.add_argument("--rate-limit-rps", type=int, default=render.COMPOSE_RATE_LIMIT[0])
    nginx_p.add_argument("--rate-limit-burst", type=int, default=render.COMPOSE_RATE_LIMIT[1])
    nginx_p.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args(argv)

    if args.command == "render-compose-nginx":
        # Needs no .env: the Compose config holds no secrets and no host ports.
        return _render_compose_nginx(args.rate_limit_rps, args.rate_limit_burst, args.check)

    config = plan_mod.NativeConfig.from_env()
    if args.command == "ports":
        # Needs no secrets: the ports come from the variables and core.settings.Published.
        for name, port in published_ports(config).items():
            print(f"{name}={port}")
        return 0
    plan = plan_mod.build(config)
    if args.command == "up":
        up(plan)
    elif args.command == "down":
        down(plan)
    elif args.command == "status":
        return status(plan)
    elif args.command == "scale":
        scale(plan, args.count)
    elif args.command == "logs":
        logs(plan, args.service, args.follow)
    elif args.command == "plan":
        print(json.dumps(render.summary(plan), indent=2))
    return 0
