"""Keeps the Docker Compose path honest without a Docker engine: the compose file against the
Compose spec, the Dockerfile through hadolint, the Compose nginx config through `nginx -t`,
every shell script through shellcheck, and the compose file's own rules (secrets, scaling)."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest

from harness.stacks import wait_for
from native import compose, render
from native.plan import ROOT

#: Starts processes of its own: a full-stack test (see tests/conftest.py).
pytestmark = pytest.mark.stack

SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SKIP_DIRS = {".git", ".venv", "var", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
LONG_RUNNING = {
    "nginx",
    "api-gateway",
    "worker-service",
    "redis",
    "postgres",
    "monitoring",
    "autoscaler",
    "docker-socket-proxy",
}
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "ADMIN_TOKEN")


def raw() -> dict[str, Any]:
    return compose.load(COMPOSE_FILE)


def example_env() -> dict[str, str]:
    return compose.read_dotenv(ROOT / ".env.example")


def interpolated() -> dict[str, Any]:
    result: dict[str, Any] = compose.interpolate(raw(), example_env())
    return result


def project_files(match: Any) -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*")):
        if path.is_file() and not SKIP_DIRS & set(path.relative_to(ROOT).parts) and match(path):
            found.append(path)
    return found


def tool(name: str) -> str:
    # test.sh installs every one of these; a missing tool is a failure, not a skip.
    found = shutil.which(name, path=f"{ROOT / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin")
    assert found, f"{name} is not installed; ./test.sh installs it"
    return found


# -- the Compose spec ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["raw", "interpolated with .env.example"])
def test_compose_file_matches_the_compose_spec(stage: str) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"no Compose spec schema at {SCHEMA} (this checkout has no ../shared beside it)")
    schema = json.loads(SCHEMA.read_text())
    document = raw() if stage == "raw" else interpolated()
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_can_fail() -> None:
    if not SCHEMA.exists():
        pytest.skip(f"no Compose spec schema at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    broken = raw()
    broken["services"]["redis"]["restart"] = ["always"]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


# -- the compose file's own rules ----------------------------------------------------------


def test_project_shape() -> None:
    doc = raw()
    assert "version" not in doc
    assert doc["name"] == "serverless-scaling"
    assert set(doc["services"]) == LONG_RUNNING | {"migrate", "load-test"}
    assert doc["services"]["load-test"]["profiles"] == ["load-test"]
    assert compose.replicas(doc["services"]["api-gateway"]) == 2
    assert compose.replicas(doc["services"]["worker-service"]) == 2
    assert doc["services"]["postgres"]["image"].startswith("postgres:16.")


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_long_running_services(name: str) -> None:
    service = raw()["services"][name]
    assert service["healthcheck"]["test"], "every long-running service has a healthcheck"
    assert service["restart"] == "unless-stopped"
    assert service["deploy"]["resources"]["limits"]["memory"]
    assert "container_name" not in service, "a fixed container name stops --scale"
    for dependency in (service.get("depends_on") or {}).values():
        assert dependency["condition"] in {"service_healthy", "service_completed_successfully"}


def test_scaled_services_publish_no_host_port() -> None:
    services = raw()["services"]
    for name in ("api-gateway", "worker-service"):
        assert not services[name].get("ports"), f"{name}: a fixed host port would clash under --scale"


def test_storage_is_never_published_beyond_loopback() -> None:
    services = interpolated()["services"]
    for name in ("redis", "postgres"):
        for spec in services[name].get("ports") or []:
            assert str(spec).startswith("127.0.0.1:"), f"{name} publishes {spec}"


def test_published_ports_are_the_earlier_demos() -> None:
    services = interpolated()["services"]
    published = {int(host) for s in services.values() for host, _ in compose.container_ports(s) if host}
    assert published == {80, 8000, 8001, 8080}
    # Redis and Postgres are published too, on loopback ports that Docker picks (never a fixed one).
    ephemeral = {name for name, s in services.items() for host, _ in compose.container_ports(s) if not host}
    assert ephemeral == {"redis", "postgres"}


def test_redis_keeps_an_append_only_file_and_a_password() -> None:
    cmd = compose.command(interpolated()["services"]["redis"])
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--save") + 1] == ""  # no RDB snapshots: the AOF alone, no periodic fork
    assert cmd[cmd.index("--requirepass") + 1] == example_env()["REDIS_PASSWORD"]


def test_no_secret_is_written_into_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert all(u.startswith(":?") for u in uses), f"{name} must be required (${{{name}:?...}}), not defaulted"
    for match in re.finditer(r"(?im)^\s*[\w-]*(password|token|secret)[\w-]*:\s*(.+)$", text):
        assert match[2].startswith("${"), f"literal secret: {match[0].strip()}"


@pytest.mark.parametrize("missing", ["REDIS_PASSWORD", "POSTGRES_PASSWORD"])
def test_compose_refuses_to_start_without_the_secrets(missing: str) -> None:
    env = {k: v for k, v in example_env().items() if k != missing}
    with pytest.raises(compose.InterpolationError, match=missing):
        compose.interpolate(raw(), env)


def test_env_example_names_what_demo_sh_writes() -> None:
    [names] = re.findall(r"^SECRETS=\(([A-Z_ ]+)\)$", (ROOT / "scripts" / "common.sh").read_text(), re.M)
    written = set(names.split())
    assert written
    assert set(example_env()) == written
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE_FILE.read_text()))
    assert required <= written


def test_load_test_reads_its_settings_at_run_time() -> None:
    # `docker compose run -e CONCURRENT_USERS=20` sets the container's environment, so the command
    # must read it there, not have it interpolated by Compose beforehand.
    service = interpolated()["services"]["load-test"]
    script = compose.command(service)[-1]
    for name in ("TARGET_URL", "CONCURRENT_USERS", "DURATION"):
        assert name in compose.environment(service)
        assert re.search(r"\$\{?" + name, script), name
    assert compose.environment(service)["TARGET_URL"] == "http://nginx"
    assert "./reports:/app/reports" in service["volumes"]
    assert "locust -f load_test/locustfile.py --headless" in script


# -- Dockerfiles ---------------------------------------------------------------------------


def dockerfiles() -> list[Path]:
    return project_files(lambda p: p.name == "Dockerfile" or p.name.endswith(".Dockerfile"))


def test_there_is_a_dockerfile() -> None:
    # The app's, and one per stand-in image for machines with no registry (OFFLINE_IMAGES=1).
    standins = sorted((ROOT / "docker" / "offline").glob("*/Dockerfile"))
    assert [p.parent.name for p in standins] == ["nginx", "postgres", "python", "redis", "socket-proxy"]
    assert sorted(dockerfiles()) == sorted([ROOT / "Dockerfile", *standins])


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint(path: Path) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_pinned_and_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(bases) >= 2
    assert all(b == "${PYTHON_IMAGE}" for b in bases), bases
    # By default the official image, pinned; OFFLINE_IMAGES=1 passes a local stand-in instead.
    default = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default), default
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert not any("apt-get" in line or "gcc" in line for line in final), "no compilers in the final image"


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines, "everything is excluded unless listed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert not allowed & {".env", ".venv", "var", ".git", "reports", "tests"}
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", (ROOT / "Dockerfile").read_text(), re.M))
    assert {c.rstrip("/") for c in copied} <= allowed


# -- the Compose nginx config --------------------------------------------------------------


def nginx_test(config: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    # -e/-p: the check writes no log or pid outside the temporary prefix.
    return subprocess.run(
        [tool("nginx"), "-t", "-q", "-e", "stderr", "-p", str(prefix), "-c", str(config)],
        capture_output=True,
        text=True,
    )


def test_compose_nginx_config_is_a_fresh_render() -> None:
    assert render.COMPOSE_NGINX.read_text() == render.nginx_compose(), (
        "nginx/compose.conf is stale: run python -m native render-compose-nginx"
    )


def test_nginx_accepts_the_compose_config(tmp_path: Path) -> None:
    result = nginx_test(render.COMPOSE_NGINX, tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_t_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text(render.COMPOSE_NGINX.read_text().replace("proxy_pass http://$api_gateway;", "proxy_pass ;", 1))
    assert nginx_test(broken, tmp_path).returncode != 0


# -- shell scripts -------------------------------------------------------------------------


def shell_scripts() -> list[Path]:
    def is_shell(path: Path) -> bool:
        if path.suffix == ".sh":
            return True
        with path.open("rb") as handle:
            first = handle.readline(200)
        return bool(re.match(rb"#!\s*\S*(/env\s+)?\S*\b(ba|da)?sh\b", first))

    return project_files(is_shell)


def test_the_known_scripts_are_found() -> None:
    found = {str(p.relative_to(ROOT)) for p in shell_scripts()}
    assert {"demo.sh", "setup.sh", "test.sh", "scripts/common.sh", ".ci/run"} <= found


@pytest.mark.parametrize("path", shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(path: Path) -> None:
    # -x with cwd ROOT: `# shellcheck source=scripts/common.sh` is followed and checked too.
    result = subprocess.run(
        [tool("shellcheck"), "-x", str(path.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cleanup_touches_this_project_only() -> None:
    for script in ("setup.sh", "demo.sh"):
        assert not re.search(r"docker\s+(\w+\s+)?prune", (ROOT / script).read_text())
    setup = (ROOT / "setup.sh").read_text()
    assert 'docker compose -f "$ROOT/docker-compose.yml" down -v --remove-orphans' in setup
    assert "-u COMPOSE_PROJECT_NAME" in setup


# -- the Compose nginx config, run: Docker's DNS played by a tiny resolver on loopback ---------


class FakeDNS:
    """Answers A queries from `records`; unknown names get NXDOMAIN, as Docker's DNS does."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return
            end, labels = 12, []
            while query[end]:
                labels.append(query[end + 1 : end + 1 + query[end]].decode())
                end += 1 + query[end]
            question = query[12 : end + 5]
            addresses = self.records.get(".".join(labels), [])
            flags = 0x8180 if addresses else 0x8183
            header = query[:2] + struct.pack(">HHHHH", flags, 1, len(addresses), 0, 0)
            answers = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(a) for a in addresses)
            self.sock.sendto(header + question + answers, client)

    def close(self) -> None:
        self.sock.close()


class Replica(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.server_address[0].encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def replicas_on(addresses: list[str]) -> tuple[int, list[http.server.ThreadingHTTPServer]]:
    """One HTTP server per loopback address, all on the same port, like containers on one network."""
    for _ in range(50):
        port = free_port()
        servers: list[http.server.ThreadingHTTPServer] = []
        try:
            for address in addresses:
                servers.append(http.server.ThreadingHTTPServer((address, port), Replica))
        except OSError:
            for server in servers:
                server.server_close()
            continue
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return port, servers
    raise RuntimeError("no port free on every address")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def compose_nginx(tmp_path: Path) -> Iterator[tuple[FakeDNS, dict[str, str]]]:
    """The Compose config as rendered for Docker, except ports, resolver address and a low rate."""
    replica_port, servers = replicas_on(["127.0.0.2", "127.0.0.3"])
    dns = FakeDNS({"api-gateway": ["127.0.0.2"]})
    ports = {"lb": free_port(), "gateway": free_port(), "worker": free_port()}
    config = tmp_path / "nginx.conf"
    config.write_text(
        render.nginx_compose(
            2,
            3,
            resolver=f"127.0.0.1:{dns.port}",
            upstreams={
                "api_gateway": f"api-gateway:{replica_port}",
                "worker_service": f"worker-service:{replica_port}",
            },
            listen_host="127.0.0.1:",
            ports=ports,
            pid=str(tmp_path / "nginx.pid"),
            temp_dir=str(tmp_path),
        )
    )
    tmp_path.chmod(0o755)
    log = (tmp_path / "nginx.log").open("wb")
    proc = subprocess.Popen(
        [tool("nginx"), "-e", "stderr", "-p", str(tmp_path), "-c", str(config), "-g", "daemon off;"], stderr=log
    )
    urls = {role: f"http://127.0.0.1:{port}" for role, port in ports.items()}
    try:
        wait_for(lambda: ok(urls["lb"] + "/nginx-health"), 10, "nginx to listen (see its log in the tmp folder)")
        yield dns, urls
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        dns.close()
        for server in servers:
            server.shutdown()
            server.server_close()


def ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_scaled_replicas_join_without_a_reload(compose_nginx: tuple[FakeDNS, dict[str, str]]) -> None:
    dns, urls = compose_nginx
    first = {httpx.get(urls["gateway"] + "/", timeout=5).text for _ in range(4)}
    assert first == {"127.0.0.2"}
    # `docker compose up --scale api-gateway=2`: Docker's DNS now answers with both replicas.
    dns.records["api-gateway"] = ["127.0.0.2", "127.0.0.3"]
    seen: set[str] = set()

    def both_answer() -> bool:
        answer = httpx.get(urls["gateway"] + "/", timeout=5)
        if answer.status_code == 200:  # the fixture's low rate limit covers every path: 429s are no answer
            seen.add(answer.text)
        return len(seen) == 2

    # valid=5s: the cached answer expires within 5 s, then round-robin reaches the new replica.
    wait_for(both_answer, 15, "the new replica to receive requests")
    assert seen == {"127.0.0.2", "127.0.0.3"}


def test_compose_nginx_errors_are_json(compose_nginx: tuple[FakeDNS, dict[str, str]]) -> None:
    _, urls = compose_nginx
    too_large = httpx.post(urls["lb"] + "/api/task", content=b"x" * 70_000, timeout=5)
    assert too_large.status_code == 413
    assert too_large.json()["error"] == "payload_too_large"
    # worker-service has no replica: Docker's DNS says NXDOMAIN, nginx answers 503, not a 502 page.
    down = httpx.get(urls["worker"] + "/worker/status", timeout=10)
    assert down.status_code == 503
    assert down.json()["error"] == "service_unavailable"
    assert down.headers["retry-after"] == "2"
    codes = [httpx.get(urls["lb"] + "/api/status", timeout=5) for _ in range(12)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert limited[0].json()["error"] == "rate_limited"
    assert limited[0].headers["retry-after"] == "1"
