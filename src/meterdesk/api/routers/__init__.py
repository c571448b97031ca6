"""One router per area; each route names the permission it needs (see ``api.deps.need``)."""
