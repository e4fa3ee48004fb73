"""The destination: lands batches in PostgreSQL, evolves schemas, keeps sync state, runs migrations."""
