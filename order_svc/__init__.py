"""order_svc: orders, payments and the checkout saga (gRPC :8082, PostgreSQL, outbox to Kafka)."""
