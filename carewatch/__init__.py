"""Carewatch's shared package: settings, CLI, database schema, local instances, tools."""
