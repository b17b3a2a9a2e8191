"""The stream worker: Faust agents that run the batch processors and sinks."""

from pipeline.worker.run import run_worker

__all__ = ["run_worker"]
