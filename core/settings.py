"""One settings object for every service, read from the process environment only: Compose and the
native launcher read `.env` and pass each service its variables (see docker-compose.yml)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.alerts import Thresholds
from core.policy import DEFAULT_CONFIG, Inputs, PolicyConfig

#: The shortest secret (Redis and Postgres passwords, admin token) the stack starts with.
SECRET_MIN_LENGTH = 16
#: What marks a copied-but-unfilled secret (.env.example says "replace-with-a-random-secret").
SECRET_PLACEHOLDER = "replace-with"  # noqa: S105 - a marker to refuse, not a secret


def weak_secret(value: str) -> str | None:
    """Why `value` is no secret, or None. scripts/common.sh (check_secrets) applies the same rule."""
    if SECRET_PLACEHOLDER in value.lower():
        return "is the placeholder from .env.example"
    if len(value) < SECRET_MIN_LENGTH:
        return f"is shorter than {SECRET_MIN_LENGTH} characters"
    return None


def _default_replica_id() -> str:
    # hostname alone is not unique for native replicas on one host; the pid makes it so.
    return f"{socket.gethostname()}-{os.getpid()}"


def new_worker_id(replica_id: str) -> str:
    """A worker's id for one process start: its replica id and a random suffix, so a restarted
    worker never adopts the claims of the process it replaces."""
    return f"{replica_id}-{os.urandom(3).hex()}"


def replica_of(worker_id: str) -> str:
    """The replica id a worker id was made from by `new_worker_id`: what stays across restarts."""
    return worker_id.rsplit("-", 1)[0]


class Published(BaseModel):
    """What the launchers read, not the services: the published ports, native mode's own ports and
    nginx's limits. docker-compose.yml repeats these defaults as `${NAME:-default}` (Compose runs
    without Python; tests/test_defaults.py holds each one to this class), native/plan.py and
    `python -m native ports` (for demo.sh) read them from here."""

    #: where the published ports listen, in both modes
    bind_address: str = "127.0.0.1"
    lb_port: int = 80
    gateway_port: int = 8000
    worker_port: int = 8001
    monitor_port: int = 8080
    #: native mode: loopback ports of redis-server and PostgreSQL, and the first of the replicas'
    redis_port: int = 6379
    postgres_port: int = 5432
    replica_port_base: int = 18000
    #: nginx: requests per second and burst per client address (0 turns the limit off); native
    #: mode reads them at each start, Compose's nginx/compose.conf is rendered with the defaults
    rate_limit_rps: int = 200
    rate_limit_burst: int = 400
    #: nginx: requests one client address may have in progress at once, on every port (limit_conn);
    #: far above a browser's 6 connections or a load test's users, it stops one address from
    #: holding every connection with slow requests. In Compose, clients on the host may share one
    #: address (Docker's port proxy), hence the room. 0 turns it off (native mode only).
    conn_per_client: int = 256

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> Published:
        """From Compose-style variables (NAME=value; an empty value means the default)."""
        given = {name: variables[name.upper()] for name in cls.model_fields if variables.get(name.upper())}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            name = str(exc.errors()[0]["loc"][0])
            raise SystemExit(f"{name.upper()} must be a whole number, got {given[name]!r}") from exc


class LoadTest(BaseModel):
    """The load test's defaults (load_test/, and the Compose `load-test` service, which repeats them
    as `${NAME:-default}`): CONCURRENT_USERS at the peak, DURATION in seconds, LOAD_SHAPE."""

    concurrent_users: int = 10
    duration: int = 60
    load_shape: Literal["steady", "step", "spike"] = "steady"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # Connections.
    redis_url: str = "redis://localhost:6379/0"
    #: REDIS_URL names a node of a Redis Cluster (core.connections makes a cluster client)
    redis_cluster: bool = False
    #: shards the queue is split into (each in one hash slot: give a cluster one or more per node);
    #: changing it needs an empty queue
    queue_shards: int = Field(default=1, ge=1, le=1024)
    database_url: str = "postgresql://serverless:serverless@localhost:5432/serverless"
    worker_service_url: str = "http://localhost:8001"

    # How this process serves HTTP: a unix socket (native replicas) or host:port (Compose).
    host: str = "0.0.0.0"
    port: int = 8000
    uds: str | None = None
    replica_id: str = Field(default_factory=_default_replica_id)
    log_level: str = "info"

    # Requests.
    #: the gateway's published port (the dashboard links to its API docs there)
    gateway_port: int = Published.model_fields["gateway_port"].default
    max_body_bytes: int = 64 * 1024
    redis_timeout_seconds: float = 2.0
    #: how long a service waits at start for Redis, Postgres and the schema (core.connections
    #: wait_for_dependencies); 0 starts at once, as native mode and Compose do, whose launchers order
    #: the start. The swarm stack file sets it: nothing orders a swarm's services.
    startup_wait_seconds: float = 0.0

    # Worker behaviour.
    worker_concurrency: int = Inputs.concurrency_per_worker
    heartbeat_interval_seconds: float = 1.0
    heartbeat_ttl_seconds: int = 5
    reaper_interval_seconds: float = 1.0
    shutdown_grace_seconds: float = 20.0
    #: how long Redis keeps a final record hot (Postgres holds it for good): hot results take
    #: about 600 B x tasks/s x this, inside the byte budget new tasks share (README, Capacity)
    result_ttl_seconds: int = 300
    #: final tasks (completed, failed, cancelled) leave Postgres this many days after they
    #: completed, and their ids answer 410 "expired"; 0 keeps them forever (core/retention.py)
    retention_days: int = Field(default=30, ge=0)
    recent_tasks_kept: int = 200
    task_timeout_seconds: float = 30.0
    #: per-type overrides as "type=seconds,..." (e.g. "cpu=60,sleep=5")
    task_timeouts: str = ""
    #: enables the `crash` task type (kills its worker), to show poison handling; off by default
    chaos_tasks: bool = False
    #: modules that register task types (core/task_types.py), comma-separated: "examples.tasks,pkg.mod"
    task_modules: str = ""
    #: refuse (422) task types nobody registered, instead of running simulated work for them
    strict_types: bool = False

    # Reliability.
    max_attempts: int = 3
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 30.0
    #: a low-priority task that waited this long joins the head of the normal list (no starvation)
    priority_aging_seconds: float = Field(default=30.0, gt=0)
    #: beyond this many waiting tasks the gateway answers 503 + Retry-After (0 = unbounded)
    queue_max: int = 10_000
    #: the byte budget: new tasks get 503 + Retry-After while their records would take Redis's
    #: used_memory past this many bytes; 0 = 30 % of Redis's maxmemory (the rest is room for the
    #: results of accepted tasks), -1 = no byte bound
    queue_max_bytes: int = 0
    idempotency_ttl_seconds: int = 24 * 3600
    #: requests one gateway process lets wait for a result at once (`GET /api/task/{id}?wait=S`);
    #: more get 503 + Retry-After
    wait_max_waiters: int = Field(default=1000, ge=1)
    #: bearer token of the admin API; empty keeps the admin API locked
    admin_token: str = ""
    #: Host names (any port) every HTTP service answers; others get 421, so a page that rebinds its
    #: DNS name to this machine reads nothing. Comma-separated; "*" allows any.
    allowed_hosts: str = "localhost,127.0.0.1,[::1],::1,nginx,api-gateway,worker-service,monitoring,autoscaler"
    #: concurrent dashboard streams (SSE) per client address, and in all; more get 429
    sse_streams_per_client: int = 8
    sse_streams_max: int = 200

    # Scaling: the policy's bounds and windows, and the autoscaler that acts on it. Their defaults
    # are core/policy.py's (Inputs, PolicyConfig): the pure policy is table-tested without settings.
    min_workers: int = Inputs.min_workers
    max_workers: int = Inputs.max_workers
    #: on: act; recommend: decide and record, act on nothing; off: do nothing
    autoscale: Literal["on", "off", "recommend"] = "on"
    #: which engine the autoscaler drives: native (supervisord), compose (Docker Engine API),
    #: swarm (the worker service's replicas, Docker Engine API) or kubernetes (the worker
    #: Deployment's scale subresource)
    autoscale_engine: Literal["native", "compose", "swarm", "kubernetes"] = "native"
    autoscale_tick_seconds: float = 1.0
    target_drain_seconds: float = DEFAULT_CONFIG.drain_target_seconds
    #: how long the load must stay low before scaling in (the stable window)
    stable_window_seconds: float = DEFAULT_CONFIG.scale_down_delay_seconds
    panic_window_seconds: float = DEFAULT_CONFIG.panic_window_seconds
    max_step: int = DEFAULT_CONFIG.max_step
    #: 0 workers after this long idle; 0 = never (keep MIN_WORKERS)
    scale_to_zero_after_seconds: float = DEFAULT_CONFIG.scale_to_zero_after_seconds
    #: native engine: supervisord's control socket
    supervisor_socket: str = ""
    #: compose and swarm engines: the Docker Engine API, through a socket proxy
    docker_host: str = "tcp://docker-socket-proxy:2375"
    compose_project: str = "serverless-scaling"
    #: swarm engine: the stack whose service `<stack>_worker-service` it scales
    swarm_stack: str = "serverless-scaling"
    #: kubernetes engine: the worker Deployment, and its namespace (empty: the service account's)
    kubernetes_deployment: str = "worker-service"
    kubernetes_namespace: str = ""
    #: kubernetes engine: the API server (empty: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
    #: as in-cluster clients find it) and the folder holding the pod's service account `token`,
    #: `ca.crt` and `namespace` (Kubernetes mounts it there; a test points both at its own server)
    kubernetes_api_url: str = ""
    kubernetes_service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"

    # Alerts (core/alerts.py; the dashboard's sampler evaluates them). Their defaults are
    # core.alerts.Thresholds', which the pure rules are tested with.
    #: where firing and resolving alerts are POSTed (JSON with a Slack-compatible `text`); empty: nowhere
    alert_webhook_url: str = ""
    alert_webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    alert_backlog_tasks: int = Thresholds.backlog_tasks
    alert_backlog_age_seconds: float = Thresholds.backlog_age_seconds
    alert_error_rate: float = Thresholds.error_rate
    alert_dlq_growth: int = Thresholds.dlq_growth
    alert_slow_type_seconds: float = Thresholds.slow_type_seconds
    alert_redis_memory_share: float = Thresholds.redis_memory_share
    alert_queue_share: float = Thresholds.queue_share
    #: how long a condition holds before it fires (Redis or Postgres unreachable: the second), and
    #: how long a fired one stays clear before it resolves
    alert_hold_seconds: float = Field(default=Thresholds.hold_seconds, ge=0)
    alert_dependency_hold_seconds: float = Field(default=Thresholds.dependency_hold_seconds, ge=0)
    alert_clear_seconds: float = Field(default=Thresholds.clear_seconds, ge=0)

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_secret(cls, value: str) -> str:
        # Empty keeps the admin API locked; anything else must be a real secret.
        problem = value and weak_secret(value)
        if problem:
            raise ValueError(f"ADMIN_TOKEN {problem}; delete its line from .env and ./demo.sh writes a random one")
        return value

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(
            drain_target_seconds=self.target_drain_seconds,
            scale_down_delay_seconds=self.stable_window_seconds,
            panic_window_seconds=self.panic_window_seconds,
            max_step=self.max_step,
            scale_to_zero_after_seconds=self.scale_to_zero_after_seconds,
        )

    def alert_thresholds(self) -> Thresholds:
        return Thresholds(
            backlog_tasks=self.alert_backlog_tasks,
            backlog_age_seconds=self.alert_backlog_age_seconds,
            error_rate=self.alert_error_rate,
            dlq_growth=self.alert_dlq_growth,
            slow_type_seconds=self.alert_slow_type_seconds,
            redis_memory_share=self.alert_redis_memory_share,
            queue_share=self.alert_queue_share,
            hold_seconds=self.alert_hold_seconds,
            dependency_hold_seconds=self.alert_dependency_hold_seconds,
            clear_seconds=self.alert_clear_seconds,
        )

    def timeout_table(self) -> dict[str, float]:
        """TASK_TIMEOUTS as {type: seconds}: the configured types only (clients choose type names)."""
        table: dict[str, float] = {}
        for item in self.task_timeouts.split(","):
            name, _, seconds = item.partition("=")
            if name.strip() and seconds.strip():
                table.setdefault(name.strip(), float(seconds))
        return table

    def timeout_for(self, task_type: str) -> float:
        return self.timeout_table().get(task_type, self.task_timeout_seconds)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def default(name: str) -> Any:
    """The default of a Settings, Published or LoadTest field: what holds when its variable is unset."""
    for model in (Settings, Published, LoadTest):
        if name in model.model_fields:
            return model.model_fields[name].get_default(call_default_factory=False)
    raise KeyError(name)
