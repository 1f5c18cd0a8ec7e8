"""Authentication (API keys, JWTs), scopes and ownership of resources.

Only the middleware (`auth.middleware`) knows HTTP; the services ask `auth.ownership` who is
calling and what that caller may see."""
