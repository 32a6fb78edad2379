"""The REST edge: JSON over HTTP on :8085, gRPC to the services behind it."""
