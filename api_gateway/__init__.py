"""The API gateway: accepts tasks, answers for them, reports status and metrics."""
