"""comment_svc: comments, reviews, likes and rating summaries of products (gRPC :8084)."""
