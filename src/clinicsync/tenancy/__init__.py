"""Organizations, users, roles, API tokens and request authentication."""
