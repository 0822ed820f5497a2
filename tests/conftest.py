"""pytest configuration shared by all tests; the service fixtures are a plugin of their own."""

pytest_plugins = ["tests.fixtures.services"]
