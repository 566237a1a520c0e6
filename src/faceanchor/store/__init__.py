"""Persistence: the SQLite database (jobs, keys, characters) and content-addressed files."""
