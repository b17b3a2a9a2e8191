"""The throughput benchmark: ``telemetry bench`` or ``python -m bench`` (see bench/README.md)."""

from bench.report import run_bench

__all__ = ["run_bench"]
