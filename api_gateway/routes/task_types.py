"""The registered task types: their listing, their place in the OpenAPI document, and the check of
a submission's `data` against its type's input model."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from api_gateway.deps import SettingsDep
from core.models import TaskSpec
from core.settings import Settings
from core.task_types import REGISTRY, TaskType

router = APIRouter(prefix="/api", tags=["tasks"])

#: The submit routes whose body names a type (and carries its data).
SUBMIT_PATHS = ("/api/task", "/api/tasks")


class RetryInfo(BaseModel):
    max_attempts: int
    #: None: the worker's RETRY_BASE_SECONDS / RETRY_CAP_SECONDS
    base_seconds: float | None
    cap_seconds: float | None


class TaskTypeInfo(BaseModel):
    name: str
    description: str
    #: the JSON schema of the task's `data`; null: any JSON object
    input_schema: dict[str, Any] | None
    #: seconds; null: TASK_TIMEOUT_SECONDS (a TASK_TIMEOUTS entry for the type wins over both)
    timeout: float | None
    #: null: MAX_ATTEMPTS with the worker's backoff
    retry: RetryInfo | None


class TaskTypes(BaseModel):
    types: list[TaskTypeInfo]
    #: STRICT_TYPES: false runs simulated work for any other type name, true refuses it (422)
    strict: bool
    unknown_types_accepted: bool


def _info(kind: TaskType) -> TaskTypeInfo:
    retry = kind.retry
    return TaskTypeInfo(
        name=kind.name,
        description=kind.description,
        input_schema=kind.schema(),
        timeout=kind.timeout,
        retry=RetryInfo(max_attempts=retry.max_attempts, base_seconds=retry.base_seconds, cap_seconds=retry.cap_seconds)
        if retry is not None
        else None,
    )


@router.get("/task-types", response_model=TaskTypes)
async def list_task_types(settings: SettingsDep) -> TaskTypes:
    """The task types this gateway knows: each one's input schema, timeout and retry policy."""
    return TaskTypes(
        types=[_info(kind) for kind in REGISTRY],
        strict=settings.strict_types,
        unknown_types_accepted=not settings.strict_types,
    )


# -- the check at submission ---------------------------------------------------------------------

_TYPES = REGISTRY.types


def check_task(spec: TaskSpec, settings: Settings) -> None:
    """Refuse (422) data its type's input model refuses, and under STRICT_TYPES a type nobody
    registered, with FastAPI's locations (["body", "data", field...]). The stored data stays what
    the client sent. A type without an input model costs one dict lookup."""
    kind = _TYPES.get(spec.type)
    if kind is None:
        if settings.strict_types:
            raise RequestValidationError([_unknown(spec, ("body",))])
    elif kind.input is not None and (errors := _refused(kind, spec, ("body",))):
        raise RequestValidationError(errors)


def check_tasks(specs: Sequence[TaskSpec], settings: Settings) -> None:
    """check_task() for each task of a batch; locations ["body", "tasks", i, ...]: all or none."""
    errors: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        kind = _TYPES.get(spec.type)
        if kind is None:
            if settings.strict_types:
                errors.append(_unknown(spec, ("body", "tasks", i)))
        elif kind.input is not None:
            errors.extend(_refused(kind, spec, ("body", "tasks", i)))
    if errors:
        raise RequestValidationError(errors)


def _unknown(spec: TaskSpec, at: tuple[str | int, ...]) -> dict[str, Any]:
    return {
        "loc": (*at, "type"),
        "msg": f"unknown task type {spec.type!r} (STRICT_TYPES is on; GET /api/task-types lists the types)",
        "type": "unknown_task_type",
    }


def _refused(kind: TaskType, spec: TaskSpec, at: tuple[str | int, ...]) -> list[dict[str, Any]]:
    return [{**e, "loc": (*at, "data", *e["loc"])} for e in kind.problems(spec.data)]


# -- the OpenAPI document -------------------------------------------------------------------------

_COMPONENT = re.compile(r"[^A-Za-z0-9._-]")


def _component_name(kind: TaskType, taken: dict[str, Any], schema: dict[str, Any]) -> str:
    assert kind.input is not None
    name = kind.input.__name__
    if name in taken and taken[name] != schema:
        name = f"TaskInput.{_COMPONENT.sub('_', kind.name)}"
    return name


def _add_types(document: dict[str, Any]) -> None:
    """Each input model in components/schemas, and on each submit operation `x-task-types`: type
    name to its data's schema (a $ref, or {} for any object) and a description listing them."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    listing: dict[str, Any] = {}
    for kind in REGISTRY:
        if kind.input is None:
            listing[kind.name] = {}
            continue
        schema = kind.input.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(def_name, definition)
        name = _component_name(kind, schemas, schema)
        schemas[name] = schema
        listing[kind.name] = {"$ref": f"#/components/schemas/{name}"}
    names = ", ".join(f"`{name}`" for name in listing)
    note = (
        f"\n\nTask types with a schema for `data` ({names}; GET /api/task-types): a known type's data is "
        "checked at submission (422 naming the field). Other type names run simulated work unless "
        "STRICT_TYPES is on."
    )
    for path in SUBMIT_PATHS:
        operation = document.get("paths", {}).get(path, {}).get("post")
        if operation is not None:
            operation["x-task-types"] = listing
            operation["description"] = (operation.get("description", "") + note).strip()


def document(app: FastAPI) -> None:
    """Show the registered types in the app's OpenAPI document (FastAPI's "extending OpenAPI"
    idiom: the default document, amended once and cached in app.openapi_schema). Built on first
    request, after the lifespan imported TASK_MODULES."""
    default: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_types(default())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
