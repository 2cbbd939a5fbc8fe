"""The monitoring dashboard on :8080."""
