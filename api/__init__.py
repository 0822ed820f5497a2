"""The HTTP API and web pages (FastAPI). Alerts, devices, usage and auth arrive with issues 3-5."""
