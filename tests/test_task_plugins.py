"""Task plugins through the real native stack: the session stack starts with
TASK_MODULES=examples.tasks (harness/stacks.py), as the README's "Your own tasks" tells a user to;
its gateways and workers run the example types end to end through nginx."""

from __future__ import annotations

from harness.stacks import Stack


def test_the_example_types_are_listed_by_every_gateway(stack: Stack) -> None:
    for _ in range(4):  # round robin: both gateway replicas loaded the module
        response = stack.http.get("/api/task-types")
        assert response.status_code == 200
        types = {t["name"]: t for t in response.json()["types"]}
        assert {"echo", "sleep", "cpu", "fail", "word_count", "pg_count"} <= set(types)
        assert types["word_count"]["input_schema"]["required"] == ["text"]


def test_word_count_runs_end_to_end(stack: Stack) -> None:
    task_id = stack.submit("word_count", {"text": "the quick brown fox\njumps over\nthe lazy dog"})
    done = stack.wait_status(task_id, {"completed", "failed"})
    assert (done["status"], done["result"]) == ("completed", {"words": 9, "lines": 3}), done
    rows = stack.task_rows("status, result", [task_id], timeout=20)
    assert (rows[0]["status"], rows[0]["result"]) == ("completed", {"words": 9, "lines": 3})


def test_pg_count_reads_the_projects_postgres(stack: Stack) -> None:
    marker = "plugin-count-probe"
    ids = [stack.submit(marker, {"work_ms": 1}) for _ in range(3)]
    stack.wait_all_final(ids)
    stack.task_rows("id", ids, timeout=20)  # all three committed to Postgres
    done = stack.wait_status(stack.submit("pg_count", {"type": marker, "status": "completed"}), {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["result"] == {"type": marker, "status": "completed", "count": 3, "attempt": 1}


def test_bad_data_for_an_example_type_is_422_through_nginx(stack: Stack) -> None:
    response = stack.http.post("/api/task", json={"type": "word_count", "data": {"text": 42}})
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "data", "text"]]
    bulk = stack.http.post(
        "/api/tasks", json={"tasks": [{"type": "word_count", "data": {"text": "ok"}}, {"type": "pg_count"}]}
    )
    assert bulk.status_code == 422, bulk.text
    assert [e["loc"] for e in bulk.json()["detail"]] == [["body", "tasks", 1, "data", "type"]]
