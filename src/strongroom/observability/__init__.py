"""Prometheus metrics: the use cases' counters (telemetry), what the metadata says at
scrape time (collector), the per-host multi-process directory, and the listener.

Nothing here imports prometheus_client at package import: prometheus_client chooses its
multi-process storage when it is first imported, after ``multiprocess.prepare``."""
