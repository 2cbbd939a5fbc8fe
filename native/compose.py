"""Reads docker-compose.yml and interpolates it the way Compose does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR and $$ (a literal $).
_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        current = variables.get(name)
        op, arg = match["op"], match["arg"] or ""
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-") and unset:
            return str(interpolate(arg, variables))
        if op in (":?", "?") and unset:
            raise InterpolationError(f"{name}: {arg or 'required variable is not set'}")
        return current or ""

    return _PATTERN.sub(substitute, value)


def load(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    return raw


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads `.env` (comments and blanks skipped, quotes stripped)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, val = line.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        values[key.strip()] = val
    return values


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def container_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """Published ports as (host port, container port); the host port is "" where Docker picks one."""
    out = []
    for spec in service.get("ports") or []:
        parts = str(spec).split(":")
        out.append((parts[-2], int(parts[-1].split("/")[0])))
    return out
