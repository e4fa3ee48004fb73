"""Local demo sources: an HTTP API server, a scratch SQL database, sample export files."""
