"""Connectors: Dagster resources that read a source system's streams as bounded batches."""
