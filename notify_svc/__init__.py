"""notify_svc: notifications from Kafka events, kept in Redis (gRPC :8083)."""
