"""`python -m benchmarks --compose` without a stack: the nginx override, docker stats' sizes, the
report's tables and the command's dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks import __main__ as bench_cli
from benchmarks.compose import megabytes, table, unlimited_nginx


def test_the_override_mounts_a_config_without_the_rate_limit(tmp_path: Path) -> None:
    override = yaml.safe_load(unlimited_nginx(tmp_path).read_text())
    (mount,) = override["services"]["nginx"]["volumes"]
    source, target, mode = mount.split(":")
    assert (target, mode) == ("/etc/nginx/nginx.conf", "ro")
    config = Path(source).read_text()
    assert "limit_req" not in config
    assert "proxy_pass http://$api_gateway" in config  # still the Compose config, by service name


@pytest.mark.parametrize(
    ("size", "mb"),
    [("45.2MiB", 45.2), ("256MiB", 256.0), ("1.5GiB", 1536.0), ("512KiB", 0.5), ("0B", 0.0), (" 3.9MiB ", 3.9)],
)
def test_docker_stats_sizes(size: str, mb: float) -> None:
    assert megabytes(size) == mb


def test_an_unknown_size_is_refused() -> None:
    with pytest.raises(ValueError, match="docker stats size"):
        megabytes("12 parsecs")


def _wrk(rps: float, p99: float) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "requests": int(rps * 4), "errors": 0}


def _result() -> dict[str, Any]:
    def http(floor: float, ingest: float) -> dict[str, Any]:
        return {"floor": _wrk(floor, 10), "ingest": _wrk(ingest, 20), "ingest_per_floor": ingest / floor}

    return {
        "http": {"native": http(4000, 2800), "compose": http(1000, 500)},
        "drain": {
            "native": {"tasks": 20000, "seconds": 2.5, "tasks_per_s": 8000.0, "rows": 20000, "fewest_rows": 20000},
            "compose": {"tasks": 20000, "seconds": 2.0, "tasks_per_s": 10000.0, "rows": 20000, "fewest_rows": 19999},
        },
        "memory": {
            "native": {"redis-1": {"rss_mb": 12.0, "pss_mb": 5.0}, "supervisord": {"rss_mb": 19.0, "pss_mb": 14.0}},
            "compose": {
                "redis-1": {"stats_mb": 4.0, "limit_mb": 512.0, "rss_mb": 12.5, "pss_mb": 5.5},
                "docker-socket-proxy-1": {"stats_mb": 5.0, "limit_mb": 64.0},
            },
        },
        "notes": ["a note"],
    }


def test_the_table_sets_the_engines_side_by_side() -> None:
    lines = table(_result()).splitlines()
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines if "|" in line}
    assert row["ingest: POST /api/task, req/s"] == ["2,800", "500", "0.18"]
    assert row["ingest / floor"] == ["0.700", "0.500", ""]
    assert row["drain: 20000 echo, 1 worker, tasks/s"] == ["8,000", "10,000", "1.25"]
    assert row["drain: rows persisted, fewest of any round"] == ["20000", "19999", ""]
    # A process one engine lacks shows "-", and is left out of neither total.
    assert row["supervisord"] == ["14.0", "19.0", "-", "-", "-", "-"]
    assert row["docker-socket-proxy-1"] == ["-", "-", "-", "-", "5.0", "64.0"]
    assert row["total"] == ["19", "31", "6", "12", "9", ""]
    assert "- a note" in lines


def test_compose_flag_selects_the_side_by_side_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_cli.main(["--compose", "--help"])
    assert exit_info.value.code == 0
    assert "python -m benchmarks --compose" in capsys.readouterr().out
