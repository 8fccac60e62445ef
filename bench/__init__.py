"""Benchmarks (not part of the packaged jobs)."""
