"""Workflows decide what to compute next; they talk only to the engine and the store."""
