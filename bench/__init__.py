"""Benchmarks that print figures; run them as scripts (python bench/NAME.py)."""
