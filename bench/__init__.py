"""Benchmarks and soak runs: their own make targets, never part of `make test`."""
