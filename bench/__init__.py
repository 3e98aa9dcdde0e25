"""Benchmark suite of cleanup-middleware: ``python -m bench [--quick]`` (``make bench``)."""
