"""What every service must agree on: settings, Redis keys, the task model, queue and database."""
