"""The worker service: claims tasks from Redis, runs them, persists results, heartbeats."""
