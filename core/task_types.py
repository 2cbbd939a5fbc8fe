"""Task types: the registry of what a worker can run, and what a gateway checks at submission.

Define a type in any importable module and name the module in TASK_MODULES (comma-separated,
e.g. `TASK_MODULES=examples.tasks,mypkg.jobs`); gateways and workers import them at start:

    from pydantic import BaseModel
    from core.task_types import Retry, TaskContext, task_type

    class WordCount(BaseModel):
        text: str

    @task_type("word_count", input=WordCount, timeout=30, retry=Retry(max_attempts=5))
    async def word_count(data: WordCount) -> dict[str, int]:
        \"\"\"Counts the words and lines of a text.\"\"\"
        return {"words": len(data.text.split()), "lines": len(data.text.splitlines())}

The function's signature rule: its first positional parameter receives the task's data, as the
`input` model validated from it (without a model, the JSON object as a dict); a second positional
parameter, when declared, receives a TaskContext (the task id, the attempt number, and the worker's
Redis client and asyncpg pool: a task can read and write the project's own stores). No other
parameter shape registers. `async def` functions run on the worker's event loop; plain `def`
functions run in a thread (asyncio.to_thread), so they may block; the context's clients are
asyncio clients, for async functions only.

The result must be JSON (it is stored in Redis and Postgres as the task's `result`). Raise
TaskFailed with words meant for the client (the attempt fails and is retried); any other exception
fails the attempt with a generic message (its details go to the worker's log). Data the input model
refuses is refused at submission with a 422 naming the field; data that reaches a worker without
passing (written to Redis directly) fails the task at once, without a retry.

A type's `timeout` (seconds) applies unless TASK_TIMEOUTS names the type; its `retry` replaces
MAX_ATTEMPTS (and, when given, RETRY_BASE_SECONDS / RETRY_CAP_SECONDS) for its tasks. A timeout
cancels an async function; a thread cannot be cancelled, so a timed-out sync function runs on to
its end in the background and its result is dropped.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from redis.asyncio import Redis

from core.models import TYPE_PATTERN

F = TypeVar("F", bound=Callable[..., Any])

#: The module that defines the built-in types (echo, sleep, cpu, fail): loaded before TASK_MODULES.
BUILTIN_MODULES = ("worker_service.handlers",)

_TYPE_NAME = re.compile(TYPE_PATTERN)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class InvalidTaskData(Exception):
    """The task's data can't be run: retrying the same input would fail the same way."""


class TaskFailed(Exception):
    """A failure a task reports in words meant for the client (retryable). Any other exception is
    a fault of the task's function: the client reads a plain message, the worker's log the details."""


class TaskModuleError(RuntimeError):
    """A module named in TASK_MODULES could not be imported, or defines a type wrongly."""


@dataclass(frozen=True)
class Retry:
    """How often a type's task runs before it fails for good, and the backoff between attempts;
    a base or cap left None is the worker's (RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)."""

    max_attempts: int
    base_seconds: float | None = None
    cap_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"Retry.max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("base_seconds", "cap_seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"Retry.{name} must not be negative, got {value}")

    def over(self, defaults: Retry) -> Retry:
        """This policy, its unset backoff taken from `defaults`."""
        return Retry(
            self.max_attempts,
            self.base_seconds if self.base_seconds is not None else defaults.base_seconds,
            self.cap_seconds if self.cap_seconds is not None else defaults.cap_seconds,
        )


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a task's function may take as its second argument."""

    task_id: str
    #: 1 for the first run, counting every start (a worker that died mid-task counts too)
    attempt: int
    task_type: str
    redis: Redis
    pool: asyncpg.Pool


@dataclass(frozen=True)
class TaskType:
    """One registered type: its function and the rules its tasks run by."""

    name: str
    function: Callable[..., Any]
    #: the pydantic model of the task's `data`, or None: the function gets the dict
    input: type[BaseModel] | None = None
    #: seconds; None: TASK_TIMEOUT_SECONDS
    timeout: float | None = None
    #: None: MAX_ATTEMPTS and the worker's backoff
    retry: Retry | None = None
    description: str = ""
    #: where it was defined (module.qualname), for errors and the type listing
    origin: str = ""
    is_async: bool = field(init=False)
    takes_context: bool = field(init=False)

    def __post_init__(self) -> None:
        if not _TYPE_NAME.fullmatch(self.name):
            raise ValueError(f"task type name {self.name!r} must be 1-64 characters of [A-Za-z0-9_.:-]")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"task type {self.name!r}: timeout must be positive, got {self.timeout}")
        if self.input is not None and not (isinstance(self.input, type) and issubclass(self.input, BaseModel)):
            raise TypeError(f"task type {self.name!r}: input must be a pydantic model class, got {self.input!r}")
        positional = [p for p in inspect.signature(self.function).parameters.values() if p.kind in _POSITIONAL]
        if len(positional) not in (1, 2):
            raise TypeError(
                f"task type {self.name!r}: {self.origin or self.function!r} must take (data) or (data, context),"
                f" not {len(positional)} positional parameters"
            )
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.function))
        object.__setattr__(self, "takes_context", len(positional) == 2)

    def problems(self, data: dict[str, Any]) -> list[ErrorDetails]:
        """What the input model refuses in `data` (locations inside `data`); none without a model."""
        if self.input is None:
            return []
        try:
            self.input.model_validate(data)
        except ValidationError as exc:
            return exc.errors(include_url=False, include_context=False, include_input=False)
        return []

    def parse(self, data: dict[str, Any]) -> Any:
        """The function's first argument: the validated model, or the dict. Raises InvalidTaskData."""
        if self.input is None:
            return data
        try:
            return self.input.model_validate(data)
        except ValidationError as exc:
            raise InvalidTaskData("; ".join(_describe(e) for e in exc.errors(include_url=False))) from None

    async def run(self, data: dict[str, Any], context: TaskContext) -> Any:
        value = self.parse(data)
        args = (value, context) if self.takes_context else (value,)
        if self.is_async:
            return await self.function(*args)
        return await asyncio.to_thread(self.function, *args)

    def schema(self) -> dict[str, Any] | None:
        """The input model's JSON schema, or None (any JSON object)."""
        return self.input.model_json_schema() if self.input is not None else None


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in ("data", *error["loc"]))
    return f"{where}: {error['msg']}"


class Registry:
    """Every task type of this process, by name."""

    def __init__(self) -> None:
        #: read directly on the submit path: one dict lookup per task
        self.types: dict[str, TaskType] = {}

    def add(self, kind: TaskType) -> TaskType:
        known = self.types.get(kind.name)
        if known is not None and known.function is not kind.function:
            raise TaskModuleError(f"task type {kind.name!r} is defined twice: by {known.origin} and {kind.origin}")
        self.types[kind.name] = kind
        return kind

    def register(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        input: type[BaseModel] | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        description: str | None = None,
    ) -> TaskType:
        origin = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"
        doc = description if description is not None else (inspect.getdoc(function) or "")
        return self.add(TaskType(name, function, input, timeout, retry, doc, origin))

    def task_type(
        self,
        name: str,
        *,
        input: type[BaseModel] | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        description: str | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function as task type `name` (the module docstring has the rules)."""

        def register(function: F) -> F:
            self.register(name, function, input=input, timeout=timeout, retry=retry, description=description)
            return function

        return register

    def get(self, name: str) -> TaskType | None:
        return self.types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __iter__(self) -> Iterator[TaskType]:
        return iter(sorted(self.types.values(), key=lambda kind: kind.name))


#: The process's one registry; task modules register into it when imported.
REGISTRY = Registry()
task_type = REGISTRY.task_type


def module_names(setting: str) -> list[str]:
    """TASK_MODULES ("pkg.mod,other.mod") as module names."""
    return [name.strip() for name in setting.split(",") if name.strip()]


def load_modules(names: Iterable[str]) -> Registry:
    """Import the built-in types' module and `names` (which register their types); a module that
    fails to import is a TaskModuleError naming it, so the service does not start."""
    for name in (*BUILTIN_MODULES, *names):
        try:
            importlib.import_module(name)
        except TaskModuleError:
            raise
        except Exception as exc:
            raise TaskModuleError(f"TASK_MODULES: cannot import {name!r}: {type(exc).__name__}: {exc}") from exc
    return REGISTRY
