"""The processes running executions, as an operator sees them (`GET /api/v1/workers`)."""
