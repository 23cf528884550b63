"""Small helpers the benchmark scripts share to write their reports."""

from synthbrain._io import markdown_table

__all__ = ["markdown_table"]
