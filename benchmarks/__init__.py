"""Benchmark and test tooling (synthetic data, data-shape families); not part of the installed package."""
