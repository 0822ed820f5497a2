"""The HTTP API (FastAPI): ``api.app.create_api``, one router per resource in ``api.routes``, the
scoped SQL per resource in the ``*_queries`` modules, and the live alert stream (``api.stream``).
"""
