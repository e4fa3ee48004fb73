"""Assets: one multi-asset per spec, one asset per stream, partitioned by integration; checks."""
