"""Users, organisations membership and roles, sessions, API tokens, login limits."""
