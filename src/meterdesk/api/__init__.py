"""The REST API under ``/api/v1``: FastAPI routers per area, schemas with money as decimal
strings, one table from error class to HTTP response, and access checks on every request."""
