"""The web pages for staff (board, fleet, onboarding, usage) and the Grafana dashboards.

``kit`` is what every page builds on, ``formatting`` and ``charts`` draw words and SVG, one
module per page holds its routes, and ``pages.mount_pages`` puts them all on the app.
"""
