"""Carewatch: the shared package beside the services (settings, CLI, database schema, local instances)."""
