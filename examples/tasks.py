"""Two task types to copy from: start the stack with `TASK_MODULES=examples.tasks ./demo.sh`.

`word_count` is a plain function (it runs in a thread); `pg_count` is async and reads the
project's own PostgreSQL through the worker's pool (its second parameter, the TaskContext).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.task_types import Retry, TaskContext, task_type


class WordCount(BaseModel):
    model_config = ConfigDict(strict=True)

    text: str = Field(max_length=60_000, description="the text to count")


class WordCountResult(BaseModel):
    words: int
    lines: int


@task_type("word_count", input=WordCount, timeout=10)
def word_count(data: WordCount) -> dict[str, int]:
    """Counts the words (runs of non-space) and lines of `text`."""
    return WordCountResult(words=len(data.text.split()), lines=len(data.text.splitlines())).model_dump()


class PgCount(BaseModel):
    model_config = ConfigDict(strict=True)

    type: str = Field(min_length=1, max_length=64, description="the task type to count")
    status: str | None = Field(None, max_length=32, description="only tasks in this status (e.g. completed)")


@task_type("pg_count", input=PgCount, timeout=5, retry=Retry(max_attempts=5, base_seconds=0.2, cap_seconds=2))
async def pg_count(data: PgCount, context: TaskContext) -> dict[str, object]:
    """Counts the tasks of `type` (and `status`) stored in PostgreSQL, through the worker's pool.
    A Postgres outage is retried (up to 5 attempts, quick backoff)."""
    count = await context.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE type = $1 AND ($2::text IS NULL OR status = $2)", data.type, data.status
    )
    return {"type": data.type, "status": data.status, "count": int(count), "attempt": context.attempt}
