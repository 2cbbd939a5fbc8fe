"""Each default is defined once, in core/settings.py; the files that must repeat it agree with it.

docker-compose.yml repeats defaults as `${NAME:-default}` because Compose runs without Python,
and .env.example shows them as `# NAME=default`; these tests fail when either drifts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from core.settings import LoadTest, Published, Settings, default, new_worker_id, replica_of
from native import compose
from native.plan import NativeConfig

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
#: Compose variables named otherwise than their settings field.
FIELD_OF = {"COMPOSE_PROJECT_NAME": "compose_project"}
#: Variables only Compose reads, with nothing in Python to agree with.
COMPOSE_ONLY = {
    "REDIS_ADDRESS": "native mode sets it; Compose reaches redis by its service name",
    "POSTGRES_ADDRESS": "native mode sets it; Compose reaches postgres by its service name",
    "REDIS_APPENDFSYNC": "redis-server's own option",
    "REDIS_MAXMEMORY": "redis-server's own option",
    "SPAWN_RATE": "empty: the load test ramps up at CONCURRENT_USERS per second",
}
#: .env.example lines that are examples to copy, not defaults.
EXAMPLES_ONLY = {"OFFLINE_IMAGES", "COMPOSE_FILE"}


def _field(variable: str) -> tuple[type[Any], str] | None:
    name = FIELD_OF.get(variable, variable.lower())
    for model in (Settings, Published, LoadTest):
        if name in model.model_fields:
            return model, name
    return None


def _same_as_default(variable: str, raw: str) -> bool:
    found = _field(variable)
    assert found is not None, variable
    model, name = found
    value = TypeAdapter(model.model_fields[name].annotation).validate_python(raw)
    return bool(value == default(name))


def _compose_defaults() -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}", COMPOSE_TEXT):
        assert found.setdefault(name, value) == value, f"{name} has two defaults in docker-compose.yml"
    return found


def _env_example_defaults() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return {m[1]: m[2] for line in lines if (m := re.fullmatch(r"# ([A-Z_][A-Z0-9_]*)=(\S*)", line))}


@pytest.mark.parametrize("variable", sorted(_compose_defaults()))
def test_compose_defaults_are_the_settings_defaults(variable: str) -> None:
    raw = _compose_defaults()[variable]
    if variable in COMPOSE_ONLY:
        assert _field(variable) is None, f"{variable} is a setting now: drop it from COMPOSE_ONLY"
        return
    assert _field(variable) is not None, f"{variable}: no field in core/settings.py (or list it in COMPOSE_ONLY)"
    assert _same_as_default(variable, raw), f"docker-compose.yml's default for {variable} ({raw!r}) disagrees"


@pytest.mark.parametrize("variable", sorted(_env_example_defaults().keys() - EXAMPLES_ONLY))
def test_env_example_shows_the_defaults(variable: str) -> None:
    raw = _env_example_defaults()[variable]
    services = compose.load(ROOT / "docker-compose.yml")["services"]
    replicas = {"GATEWAYS": "api-gateway", "WORKERS": "worker-service"}
    if variable in replicas:
        assert int(raw) == compose.replicas(services[replicas[variable]])
    elif _field(variable) is not None:
        assert _same_as_default(variable, raw), f".env.example's {variable}={raw} disagrees with core/settings.py"
    else:
        assert _compose_defaults().get(variable) == raw, f".env.example's {variable}={raw} disagrees with Compose"


def test_native_mode_reads_the_same_defaults(tmp_path: Path) -> None:
    config = NativeConfig.from_env(root=tmp_path, environ={})
    published = Published()
    assert (config.lb_port, config.gateway_port, config.worker_port, config.monitor_port) == (
        published.lb_port,
        published.gateway_port,
        published.worker_port,
        published.monitor_port,
    )
    assert (config.rate_limit_rps, config.rate_limit_burst, config.conn_per_client) == (
        published.rate_limit_rps,
        published.rate_limit_burst,
        published.conn_per_client,
    )
    assert config.max_workers == default("max_workers")
    assert Settings.model_fields["gateway_port"].default == published.gateway_port


def test_published_variables_override_and_refuse_non_numbers() -> None:
    assert Published.from_variables({"LB_PORT": "8088", "MONITOR_PORT": ""}).lb_port == 8088
    assert Published.from_variables({"MONITOR_PORT": ""}).monitor_port == Published().monitor_port
    with pytest.raises(SystemExit, match="LB_PORT must be a whole number"):
        Published.from_variables({"LB_PORT": "eighty"})


def test_demo_sh_writes_no_default_of_its_own() -> None:
    text = (ROOT / "demo.sh").read_text()
    assert not re.findall(r"\$\{(?:[A-Z_]*PORT|[A-Z_]*WORKERS|AUTOSCALE):-", text)
    assert not re.findall(r'max="\$\{max:-', text)


def test_a_worker_id_names_its_replica() -> None:
    first, second = new_worker_id("worker-service-3"), new_worker_id("worker-service-3")
    assert first != second
    assert replica_of(first) == replica_of(second) == "worker-service-3"
