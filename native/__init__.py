"""Runs the stack defined in docker-compose.yml as local processes, for machines with no Docker engine."""
