"""Example task modules: load them with TASK_MODULES=examples.tasks (README, "Your own tasks")."""
