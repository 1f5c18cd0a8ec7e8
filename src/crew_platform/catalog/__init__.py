"""What the configured model providers serve (`GET /api/v1/models`) and their state (`/health`)."""
