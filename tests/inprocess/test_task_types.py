"""Task types in-process: the registry's rules, the gateway's 422s for a type's bad data (single and
bulk) and for unknown types under STRICT_TYPES, GET /api/task-types, the OpenAPI document, and
registered types running on a worker app (sync and async, with context, timeouts and retries)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from core import keys
from core.models import TaskSpec
from core.task_types import REGISTRY, Registry, Retry, TaskModuleError, TaskType, load_modules, module_names
from tests.inprocess import sample_tasks  # registers the test.* types in this process
from tests.inprocess.apps import MARKS, final, persisted, serving, submit
from tests.inprocess.servers import Servers

pytestmark = MARKS

assert sample_tasks.add is not None


def errors(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    detail: list[dict[str, Any]] = body["detail"]
    return detail


# -- the registry -------------------------------------------------------------------------------


def test_a_module_registers_through_the_decorator_and_keeps_its_function() -> None:
    load_modules(module_names(" examples.tasks , "))
    for name in ("echo", "sleep", "cpu", "fail", "word_count", "pg_count"):
        assert name in REGISTRY
    from examples import tasks

    kind = REGISTRY.types["word_count"]
    assert kind.function is tasks.word_count  # the decorator hands the function back unchanged
    assert (kind.is_async, kind.takes_context, kind.timeout) == (False, False, 10)
    assert REGISTRY.types["pg_count"].takes_context
    assert REGISTRY.types["pg_count"].retry == Retry(max_attempts=5, base_seconds=0.2, cap_seconds=2)
    assert kind.description.startswith("Counts the words")


def test_a_module_that_does_not_import_is_a_startup_error_naming_it() -> None:
    with pytest.raises(TaskModuleError, match=r"TASK_MODULES: cannot import 'examples\.nope'"):
        load_modules(["examples.nope"])


async def test_a_gateway_with_a_broken_task_module_does_not_start(servers: Servers) -> None:
    with pytest.raises(TaskModuleError, match="no_such_module"):
        async with serving(servers, "api-gateway", TASK_MODULES="examples.tasks,no_such_module"):
            pass


def test_the_registry_refuses_bad_definitions() -> None:
    registry = Registry()

    async def one(data: dict[str, Any]) -> None:
        return None

    async def three(a: Any, b: Any, c: Any) -> None:
        return None

    with pytest.raises(TypeError, match="must take"):
        registry.register("three", three)
    with pytest.raises(ValueError, match="1-64 characters"):
        registry.register("no spaces", one)
    with pytest.raises(ValueError, match="timeout must be positive"):
        registry.register("zero", one, timeout=0)
    with pytest.raises(TypeError, match="pydantic model"):
        registry.register("not-a-model", one, input=dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_attempts"):
        Retry(max_attempts=0)
    registry.register("one", one)
    registry.register("one", one)  # the same function again (a module imported twice): no change

    async def other(data: dict[str, Any]) -> None:
        return None

    with pytest.raises(TaskModuleError, match="defined twice"):
        registry.register("one", other)
    assert [kind.name for kind in registry] == ["one"]


def test_a_retry_policy_takes_the_workers_backoff_where_it_sets_none() -> None:
    assert Retry(5).over(Retry(3, 1.0, 30.0)) == Retry(5, 1.0, 30.0)
    assert Retry(5, 0.1).over(Retry(3, 1.0, 30.0)) == Retry(5, 0.1, 30.0)


def test_invalid_data_on_the_worker_names_the_field() -> None:
    from core.task_types import InvalidTaskData

    kind: TaskType = REGISTRY.types["sleep"]
    with pytest.raises(InvalidTaskData, match=r"data\.ms: Input should be a valid number"):
        kind.parse({"ms": "abc"})


# -- the gateway's check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_type", "data", "loc", "kind"),
    [
        ("sleep", {"ms": "abc"}, ["body", "data", "ms"], "float_type"),
        ("sleep", {"ms": True}, ["body", "data", "ms"], "float_type"),  # a boolean is no number
        ("sleep", {"ms": 600_001}, ["body", "data", "ms"], "less_than_equal"),
        ("sleep", {"ms": -1}, ["body", "data", "ms"], "greater_than_equal"),
        ("cpu", {"iterations": 1.5}, ["body", "data", "iterations"], "int_type"),
        ("cpu", {"iterations": 5_000_001}, ["body", "data", "iterations"], "less_than_equal"),
        ("fail", {"message": 7}, ["body", "data", "message"], "string_type"),
        ("word_count", {}, ["body", "data", "text"], "missing"),
        ("word_count", {"text": ["a"]}, ["body", "data", "text"], "string_type"),
    ],
)
async def test_bad_data_of_a_known_type_is_422_naming_the_field(
    servers: Servers, gateway: httpx.AsyncClient, task_type: str, data: dict[str, Any], loc: list[str], kind: str
) -> None:
    found = errors(await gateway.post("/api/task", json={"type": task_type, "data": data}))
    assert [(e["loc"], e["type"]) for e in found] == [(loc, kind)]
    assert servers.redis.llen(keys.SINGLE.queue) == 0


async def test_bad_data_in_a_batch_is_422_naming_the_task_and_nothing_is_queued(
    servers: Servers, gateway: httpx.AsyncClient
) -> None:
    tasks = [
        {"type": "echo", "data": {"ms": "anything goes"}},
        {"type": "sleep", "data": {"ms": "abc"}},
        {"type": "sleep", "data": {"ms": 5}},
        {"type": "word_count", "data": {"text": 3}},
    ]
    found = errors(await gateway.post("/api/tasks", json={"tasks": tasks}))
    assert [e["loc"] for e in found] == [["body", "tasks", 1, "data", "ms"], ["body", "tasks", 3, "data", "text"]]
    assert servers.redis.llen(keys.SINGLE.queue) == 0


async def test_accepted_data_is_stored_as_the_client_sent_it(gateway: httpx.AsyncClient) -> None:
    sent = {"ms": 5, "note": "kept"}  # an int stays an int; fields the model ignores stay
    task_id = await submit(gateway, "sleep", sent)
    assert (await gateway.get(f"/api/task/{task_id}")).json()["data"] == sent
    response = await gateway.post("/api/tasks", json={"tasks": [{"type": "sleep", "data": sent}, {"type": "zzz"}]})
    assert response.status_code == 202, response.text
    stored = (await gateway.get(f"/api/task/{response.json()['task_ids'][0]}")).json()
    assert stored["data"] == sent


async def test_unknown_types_are_accepted_unless_strict(servers: Servers, gateway: httpx.AsyncClient) -> None:
    assert (await gateway.post("/api/task", json={"type": "made-up", "data": {"work_ms": 1}})).status_code == 202
    async with serving(servers, "api-gateway", STRICT_TYPES="true") as strict:
        found = errors(await strict.post("/api/task", json={"type": "made-up"}))
        assert [(e["loc"], e["type"]) for e in found] == [(["body", "type"], "unknown_task_type")]
        assert "made-up" in found[0]["msg"]
        batch = [{"type": "echo"}, {"type": "made-up"}, {"type": "sleep", "data": {"ms": "x"}}]
        found = errors(await strict.post("/api/tasks", json={"tasks": batch}))
        assert [e["loc"] for e in found] == [["body", "tasks", 1, "type"], ["body", "tasks", 2, "data", "ms"]]
        assert (await strict.post("/api/task", json={"type": "word_count", "data": {"text": "a b"}})).status_code == 202


# -- the listing and the OpenAPI document ---------------------------------------------------------


async def test_task_types_lists_each_type_with_its_schema_timeout_and_retry(
    servers: Servers, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.get("/api/task-types")
    assert response.status_code == 200
    body = response.json()
    assert (body["strict"], body["unknown_types_accepted"]) == (False, True)
    types = {t["name"]: t for t in body["types"]}
    assert {"echo", "sleep", "cpu", "fail", "word_count", "pg_count", "test.add"} <= set(types)
    assert "crash" not in types  # a chaos stand-in, not a registered type
    assert types["echo"]["input_schema"] is None
    assert types["echo"]["description"].startswith("Returns its data")
    ms = types["sleep"]["input_schema"]["properties"]["ms"]
    assert (ms["type"], ms["minimum"], ms["maximum"], ms["default"]) == ("number", 0, 600_000, 100)
    assert types["cpu"]["input_schema"]["properties"]["iterations"]["type"] == "integer"
    assert types["word_count"]["input_schema"]["required"] == ["text"]
    assert (types["word_count"]["timeout"], types["word_count"]["retry"]) == (10, None)
    assert types["pg_count"]["retry"] == {"max_attempts": 5, "base_seconds": 0.2, "cap_seconds": 2}
    assert types["sleep"]["timeout"] is None
    async with serving(servers, "api-gateway", STRICT_TYPES="true") as strict:
        body = (await strict.get("/api/task-types")).json()
        assert (body["strict"], body["unknown_types_accepted"]) == (True, False)


async def test_the_openapi_document_shows_the_types(gateway: httpx.AsyncClient) -> None:
    document = (await gateway.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert schemas["SleepInput"]["properties"]["ms"]["maximum"] == 600_000
    assert schemas["WordCount"]["required"] == ["text"]
    assert "/api/task-types" in document["paths"]
    for path in ("/api/task", "/api/tasks"):
        operation = document["paths"][path]["post"]
        listing = operation["x-task-types"]
        assert listing["sleep"] == {"$ref": "#/components/schemas/SleepInput"}
        assert listing["word_count"] == {"$ref": "#/components/schemas/WordCount"}
        assert listing["echo"] == {}
        assert "`word_count`" in operation["description"]
    # Every reference resolves inside the document.
    refs = [v["$ref"] for v in document["paths"]["/api/task"]["post"]["x-task-types"].values() if v]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)


# -- on a worker ----------------------------------------------------------------------------------


async def test_builtins_keep_their_results(gateway: httpx.AsyncClient, worker: httpx.AsyncClient) -> None:
    sleep = await final(gateway, await submit(gateway, "sleep", {"ms": 5}))
    assert (sleep["status"], sleep["result"]) == ("completed", {"slept_ms": 5.0})
    cpu = await final(gateway, await submit(gateway, "cpu", {"iterations": 10}))
    digest = b"serverless-scaling"
    for _ in range(10):
        digest = hashlib.sha256(digest).digest()
    assert cpu["result"] == {"iterations": 10, "digest": digest.hex()}
    echo = await final(gateway, await submit(gateway, "echo", {"x": [1, "y"]}))
    assert echo["result"] == {"echo": {"x": [1, "y"]}}
    failed = await final(gateway, await submit(gateway, "fail", {"message": "boom"}))
    assert (failed["status"], failed["error"], failed["attempts"]) == ("failed", "boom", 3)
    simulated = await final(gateway, await submit(gateway, "legacy", {"work_ms": 1}))
    assert simulated["result"] == {"message": "Processed legacy task", "processed_data": {"work_ms": 1}, "work_ms": 1.0}


async def test_a_sync_function_runs_in_a_thread_with_its_validated_model(
    gateway: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    done = await final(gateway, await submit(gateway, "test.add", {"a": 2, "b": 40}))
    assert (done["status"], done["result"]) == ("completed", {"sum": 42, "main_thread": False})
    counted = await final(gateway, await submit(gateway, "word_count", {"text": "one two\nthree  four five\n"}))
    assert counted["result"] == {"words": 5, "lines": 2}


async def test_an_async_function_gets_its_context_with_the_workers_stores(
    servers: Servers, gateway: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    task_id = await submit(gateway, "test.context", {"k": 1})
    done = await final(gateway, task_id)
    assert done["result"] == {
        "data": {"k": 1},
        "task_id": task_id,
        "attempt": 1,
        "task_type": "test.context",
        "redis": "1",
        "postgres": 42,
    }


async def test_pg_count_reads_postgres_through_the_context(
    servers: Servers, gateway: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    for i in range(3):
        await persisted(servers, gateway, await submit(gateway, "word_count", {"text": f"w{i}"}))
    done = await final(gateway, await submit(gateway, "pg_count", {"type": "word_count", "status": "completed"}))
    assert done["result"] == {"type": "word_count", "status": "completed", "count": 3, "attempt": 1}


async def test_a_types_timeout_applies_and_task_timeouts_overrides_it(
    servers: Servers, gateway: httpx.AsyncClient
) -> None:
    async with serving(servers, "worker-service", MAX_ATTEMPTS="1"):
        own = await final(gateway, await submit(gateway, "test.slow", {"seconds": 5}))
    assert (own["status"], own["error"]) == ("failed", "timed out after 0.2 s")
    # TASK_TIMEOUTS names the operator's choice: it wins over the type's own timeout.
    async with serving(servers, "worker-service", MAX_ATTEMPTS="1", TASK_TIMEOUTS="test.slow=0.6"):
        configured = await final(gateway, await submit(gateway, "test.slow", {"seconds": 0.4}))
        over = await final(gateway, await submit(gateway, "test.slow", {"seconds": 5}))
    assert configured["status"] == "completed"
    assert over["error"] == "timed out after 0.6 s"


async def test_a_types_retry_policy_replaces_max_attempts(
    gateway: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    # MAX_ATTEMPTS is 3: test.flaky allows 5 and succeeds on its 4th; test.once allows 1.
    flaky = await final(gateway, await submit(gateway, "test.flaky"))
    assert (flaky["status"], flaky["attempts"], flaky["result"]) == ("completed", 4, {"succeeded_on": 4})
    once = await final(gateway, await submit(gateway, "test.once"))
    assert (once["status"], once["attempts"], once["error"]) == ("failed", 1, "fails, and is never retried")


async def test_data_that_skipped_the_gateway_fails_on_the_worker_without_retry(
    servers: Servers, gateway: httpx.AsyncClient, worker: httpx.AsyncClient
) -> None:
    async with servers.queue() as queue:
        accepted = await queue.enqueue(TaskSpec(type="sleep", data={"ms": "abc"}))
    done = await final(gateway, accepted.id)
    assert (done["status"], done["attempts"]) == ("failed", 1)
    assert done["error"].startswith("invalid data: data.ms: Input should be a valid number"), done["error"]


async def test_a_strict_worker_fails_unknown_types_without_retry(servers: Servers, gateway: httpx.AsyncClient) -> None:
    async with servers.queue() as queue:
        accepted = await queue.enqueue(TaskSpec(type="made-up", data={"work_ms": 1}))
    async with serving(servers, "worker-service", STRICT_TYPES="true"):
        done = await final(gateway, accepted.id)
    assert (done["status"], done["attempts"]) == ("failed", 1)
    assert "unknown task type 'made-up'" in done["error"]
