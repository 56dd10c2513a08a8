"""Stages 1-2, the operator's data: JSON Schema validation with defaults, generated values."""
