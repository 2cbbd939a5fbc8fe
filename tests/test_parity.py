"""Native mode and Compose must not drift: the native plan derived from docker-compose.yml has
the same services, commands, environment variable names, ports and replica counts, and the
Compose nginx config fronts the same ports and services as the native one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest

from native import compose, render
from native.plan import NGINX_ROLES, ROOT, NativeConfig, Plan, build, redis_socket_url

SECRETS = {"REDIS_PASSWORD": "r-secret", "POSTGRES_PASSWORD": "p-secret", "ADMIN_TOKEN": "a-secret"}
#: What native mode adds because its replicas share one host: where to listen and a unique id
#: (in a container, the bind address is 0.0.0.0 and the id comes from the container's hostname).
NATIVE_ONLY_ENV = {"HOST", "REPLICA_ID", "SUPERVISOR_SOCKET"}
#: The autoscaler drives supervisord natively and the Docker Engine API on Compose.
NATIVE_OVERRIDES = {("autoscaler", "AUTOSCALE_ENGINE"): "native"}
#: Compose-only: the Docker socket proxy has no native counterpart (supervisord's own socket is it).
COMPOSE_ONLY = {"docker-socket-proxy"}
APPS = ("api-gateway", "worker-service", "monitoring")


def defaults(root: Path) -> NativeConfig:
    # A folder holding only the compose file: a developer's .env must not shift the defaults.
    return NativeConfig.from_env(root, dict(SECRETS))


@pytest.fixture(scope="module")
def bare_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parity")
    (root / "docker-compose.yml").symlink_to(ROOT / "docker-compose.yml")
    return root


@pytest.fixture(scope="module")
def plan(bare_root: Path) -> Plan:
    return build(defaults(bare_root), resolve_binaries=False)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    result: dict[str, Any] = compose.interpolate(compose.load(ROOT / "docker-compose.yml"), SECRETS)["services"]
    return result


def health_url(service: dict[str, Any]) -> SplitResult:
    match = re.search(r"http://127\.0\.0\.1:\d+/[^'\s]*", " ".join(service["healthcheck"]["test"]))
    assert match, service["healthcheck"]
    return urlsplit(match[0])


def container_port(service: dict[str, Any]) -> int:
    """The port a Compose service listens on inside its container, from its healthcheck."""
    port = health_url(service).port
    assert port is not None
    return port


def test_same_service_names(plan: Plan, services: dict[str, Any]) -> None:
    on_demand = {name for name, s in services.items() if s.get("profiles")}
    assert on_demand == {"load-test"}
    assert {p.service for p in plan.programs} | {plan.migrate.service} == set(services) - on_demand - COMPOSE_ONLY


def test_same_commands(plan: Plan, services: dict[str, Any]) -> None:
    for program in [*plan.programs, plan.migrate]:
        if program.infra:
            continue
        expected = compose.command(services[program.service])
        assert expected[0] == "python"
        # Native runs the venv's interpreter for the image's `python`; the arguments are identical.
        assert program.command[1:] == expected[1:], program.name


def test_same_environment_names_and_values(plan: Plan, services: dict[str, Any]) -> None:
    for program in [*plan.programs, plan.migrate]:
        if program.infra:
            continue
        expected = compose.environment(services[program.service])
        assert set(program.env) - NATIVE_ONLY_ENV == set(expected), program.name
        for name, value in expected.items():
            if name.endswith("_URL") or name in ("PORT", "DOCKER_HOST"):
                continue  # addresses: compared below
            assert program.env[name] == NATIVE_OVERRIDES.get((program.service, name), value), f"{program.name}: {name}"


def test_urls_differ_only_in_the_address(plan: Plan, services: dict[str, Any]) -> None:
    for program in [*plan.programs, plan.migrate]:
        for name, value in compose.environment(services.get(program.service, {})).items():
            if not name.endswith("_URL"):
                continue
            ours, theirs = urlsplit(program.env[name]), urlsplit(value)
            if not value:
                # An optional URL the operator sets (ALERT_WEBHOOK_URL): unset in both modes.
                assert program.env[name] == "", f"{program.name}: {name}"
                continue
            if name == "REDIS_URL":
                # This host's own Redis, through its unix socket: same password, same database.
                assert ours.scheme == "unix", program.name
                assert ours.path == str(plan.config.redis_socket), program.name
                assert (ours.username or "", ours.password, ours.query) == (
                    theirs.username or "",
                    theirs.password,
                    f"db={theirs.path.strip('/')}",
                ), program.name
                continue
            assert (ours.scheme, ours.username, ours.password, ours.path) == (
                theirs.scheme,
                theirs.username,
                theirs.password,
                theirs.path,
            ), f"{program.name}: {name}"
            assert ours.hostname == "127.0.0.1"


def test_redis_listens_on_the_socket_the_services_use(plan: Plan) -> None:
    redis = plan.program("redis").command
    assert redis[redis.index("--unixsocket") + 1] == str(plan.config.redis_socket)
    assert redis[redis.index("--unixsocketperm") + 1] == "700"  # only the stack's own user


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@127.0.0.1:6390/0", "unix://:pw@/run/r.sock?db=0"),
        ("redis://:pw@127.0.0.1:6390/3", "unix://:pw@/run/r.sock?db=3"),
        ("redis://:pw@127.0.0.1:6390", "unix://:pw@/run/r.sock?db=0"),
        ("redis://127.0.0.1:6390/1", "unix:///run/r.sock?db=1"),  # no password
        ("redis://:pw@10.0.0.5:6379/0", "redis://:pw@10.0.0.5:6379/0"),  # another host's Redis
        ("rediss://:pw@127.0.0.1:6390/0", "rediss://:pw@127.0.0.1:6390/0"),  # TLS: left alone
    ],
)
def test_redis_socket_url(url: str, expected: str) -> None:
    assert redis_socket_url(url, "127.0.0.1:6390", Path("/run/r.sock")) == expected


def test_secrets_reach_both_modes_alike(plan: Plan, services: dict[str, Any]) -> None:
    redis = plan.program("redis").command
    # Native redis-server reads it from a 0600 file, not its command line (which `ps` shows).
    assert plan.redis_password == SECRETS["REDIS_PASSWORD"]
    assert "--requirepass" not in redis
    assert SECRETS["REDIS_PASSWORD"] not in redis
    assert redis[1] == str(plan.config.redis_auth)
    assert compose.environment(services["redis"])["REDISCLI_AUTH"] == SECRETS["REDIS_PASSWORD"]
    assert plan.postgres_password == SECRETS["POSTGRES_PASSWORD"]
    assert urlsplit(plan.migrate.env["DATABASE_URL"]).password == SECRETS["POSTGRES_PASSWORD"]


def test_redis_and_postgres_have_the_same_settings(plan: Plan, services: dict[str, Any]) -> None:
    compose_args = compose.command(services["redis"])[1:]
    at = compose_args.index("--requirepass")
    password = compose_args[at + 1]
    compose_args = compose_args[:at] + compose_args[at + 2 :]
    native_args = plan.program("redis").command
    # After the password file (native mode's stand-in for --requirepass): the same settings.
    assert native_args[2 : 2 + len(compose_args)] == compose_args, "AOF, fsync and memory as in Compose"
    assert plan.redis_password == password
    pg = compose.environment(services["postgres"])
    assert (plan.postgres_user, plan.postgres_db) == (pg["POSTGRES_USER"], pg["POSTGRES_DB"])
    database = urlsplit(plan.migrate.env["DATABASE_URL"])
    assert (database.username, database.path) == (pg["POSTGRES_USER"], "/" + pg["POSTGRES_DB"])


def test_same_replica_counts(plan: Plan, services: dict[str, Any]) -> None:
    for name in APPS:
        started = [p for p in plan.of(name) if p.autostart]
        assert len(started) == compose.replicas(services[name]), name


def test_same_published_ports(plan: Plan, services: dict[str, Any]) -> None:
    compose_published = {
        (name, int(host), container)
        for name, s in services.items()
        for host, container in compose.container_ports(s)
        if host
    }
    # Redis and Postgres listen on loopback in both modes: native on REDIS_PORT / POSTGRES_PORT,
    # Compose on ports Docker picks.
    loopback = {name for name, s in services.items() for spec in s.get("ports") or [] if spec.startswith("127.0.0.1::")}
    assert loopback == {"redis", "postgres"}
    assert "--bind" in plan.program("redis").command
    assert "listen_addresses=127.0.0.1" in plan.program("postgres").command
    native_published = {("nginx", port, c) for c, role in NGINX_ROLES.items() for port in [plan.listeners[role]]}
    native_published |= {
        ("monitoring", p.port or 0, container_port(services["monitoring"])) for p in plan.of("monitoring")
    }
    assert native_published == compose_published
    assert {host for _, host, _ in compose_published} == {80, 8000, 8001, 8080}


def test_services_listen_where_their_callers_expect(services: dict[str, Any]) -> None:
    for name in APPS:
        env = compose.environment(services[name])
        assert int(env["PORT"]) == container_port(services[name]), name
    worker_url = urlsplit(compose.environment(services["api-gateway"])["WORKER_SERVICE_URL"])
    assert (worker_url.hostname, worker_url.port) == ("worker-service", container_port(services["worker-service"]))


def test_same_health_paths(plan: Plan, services: dict[str, Any]) -> None:
    for name in APPS:
        assert {p.health_path for p in plan.of(name)} == {health_url(services[name]).path}, name


def test_both_nginx_configs_front_the_same_ports_and_services(plan: Plan, services: dict[str, Any]) -> None:
    text = render.COMPOSE_NGINX.read_text()
    assert {int(p) for p in re.findall(r"^\s*listen (\d+);", text, re.M)} == set(NGINX_ROLES)
    assert {c for _, c in compose.container_ports(services["nginx"])} == set(NGINX_ROLES)
    for variable, target in render.COMPOSE_UPSTREAMS.items():
        host, port = target.split(":")
        assert int(port) == container_port(services[host]), target
        assert f"proxy_pass http://${variable};" in text
    native_text = render.nginx_native(plan)
    for variable in render.COMPOSE_UPSTREAMS:
        assert f"proxy_pass http://{variable};" in native_text
    # The limits and JSON error pages are the same text in both; only the plumbing differs.
    for pattern in (
        r"^\s*limit_req zone=.*$",
        r"^\s*client_max_body_size .*$",
        r"^\s*error_page .*$",
        r"^\s*return .*$",
    ):
        assert re.findall(pattern, text, re.M) == re.findall(pattern, native_text, re.M), pattern


def test_rate_limit_defaults_agree(bare_root: Path) -> None:
    native = defaults(bare_root)
    assert (native.rate_limit_rps, native.rate_limit_burst) == render.COMPOSE_RATE_LIMIT
    rps, burst = render.COMPOSE_RATE_LIMIT
    assert f"rate={rps}r/s;" in render.COMPOSE_NGINX.read_text()
    assert f"burst={burst} nodelay;" in render.COMPOSE_NGINX.read_text()


def test_load_test_is_compose_only(plan: Plan) -> None:
    assert not plan.of("load-test")
