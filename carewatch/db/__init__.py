"""The database schema: ordered SQL migrations and the one place that knows about TimescaleDB."""
