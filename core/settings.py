"""One settings object for every service, read from the environment (and `.env`)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.policy import PolicyConfig


def _default_replica_id() -> str:
    # hostname alone is not unique for native replicas on one host; the pid makes it so.
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    # Environment only: Compose and the native launcher both pass each service its variables.
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # Connections (names kept from the earlier demo).
    redis_url: str = "redis://localhost:6379/0"
    database_url: str = "postgresql://serverless:serverless@localhost:5432/serverless"
    worker_service_url: str = "http://localhost:8001"

    # How this process serves HTTP: a unix socket (native replicas) or host:port (Compose).
    host: str = "0.0.0.0"
    port: int = 8000
    uds: str | None = None
    replica_id: str = Field(default_factory=_default_replica_id)
    log_level: str = "info"

    # Requests.
    max_body_bytes: int = 64 * 1024
    redis_timeout_seconds: float = 2.0

    # Worker behaviour.
    worker_concurrency: int = 8
    heartbeat_interval_seconds: float = 1.0
    heartbeat_ttl_seconds: int = 5
    reaper_interval_seconds: float = 1.0
    shutdown_grace_seconds: float = 20.0
    result_ttl_seconds: int = 3600
    recent_tasks_kept: int = 200
    task_timeout_seconds: float = 30.0
    #: per-type overrides as "type=seconds,..." (e.g. "cpu=60,sleep=5")
    task_timeouts: str = ""
    #: enables the `crash` task type (kills its worker), to show poison handling; off by default
    chaos_tasks: bool = False

    # Reliability.
    max_attempts: int = 3
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 30.0
    #: beyond this many waiting tasks the gateway answers 503 + Retry-After (0 = unbounded)
    queue_max: int = 10_000
    idempotency_ttl_seconds: int = 24 * 3600
    #: bearer token of the admin API; empty keeps the admin API locked
    admin_token: str = ""

    # Scaling: the policy's bounds and windows, and the autoscaler that acts on it.
    min_workers: int = 1
    max_workers: int = 8
    #: on: act; recommend: decide and record, act on nothing; off: do nothing
    autoscale: Literal["on", "off", "recommend"] = "on"
    #: which engine the autoscaler drives: native (supervisord) or compose (Docker Engine API)
    autoscale_engine: Literal["native", "compose"] = "native"
    autoscale_tick_seconds: float = 1.0
    target_drain_seconds: float = 30.0
    #: how long the load must stay low before scaling in (the stable window)
    stable_window_seconds: float = 30.0
    panic_window_seconds: float = 6.0
    max_step: int = 2
    #: 0 workers after this long idle; 0 = never (keep MIN_WORKERS)
    scale_to_zero_after_seconds: float = 0.0
    #: native engine: supervisord's control socket
    supervisor_socket: str = ""
    #: compose engine: the Docker Engine API, through a socket proxy
    docker_host: str = "tcp://docker-socket-proxy:2375"
    compose_project: str = "serverless-scaling"

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(
            drain_target_seconds=self.target_drain_seconds,
            scale_down_delay_seconds=self.stable_window_seconds,
            panic_window_seconds=self.panic_window_seconds,
            max_step=self.max_step,
            scale_to_zero_after_seconds=self.scale_to_zero_after_seconds,
        )

    def timeout_for(self, task_type: str) -> float:
        for item in self.task_timeouts.split(","):
            name, _, seconds = item.partition("=")
            if name.strip() == task_type and seconds.strip():
                return float(seconds)
        return self.task_timeout_seconds


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
