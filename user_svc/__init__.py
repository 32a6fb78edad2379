"""user_svc: accounts, sessions and tokens (gRPC :8080, PostgreSQL, Redis)."""
