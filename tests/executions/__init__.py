"""Executions suite: runs on SQLite and PostgreSQL (the `backend` fixture)."""
