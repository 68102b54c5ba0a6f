"""Benchmarks: scripts that print their figures (run `make bench` or each script)."""
