"""Orchestration: the only package that strings the stages together (no stage imports it)."""
