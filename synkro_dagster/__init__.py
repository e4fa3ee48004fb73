"""Synkro: keeps each client's data layer in sync with their APIs, databases and file exports."""

__version__ = "0.1.0"
