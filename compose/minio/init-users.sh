#!/bin/sh
# MinIO users (the s3_users job, in MinIO's image, with its mc): product_svc's own user, allowed
# the bucket shop-images alone (product-svc-policy.json); the root user stays for administration.
# Passwords: MINIO_ROOT_PASSWORD and PRODUCT_SVC_S3_SECRET_KEY (x-local-dev-only: local
# development defaults, see docker-compose.yml).  Idempotent: a later run sets them again.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc admin policy create local product-svc-bucket /init/product-svc-policy.json
mc admin user add local product_svc "$PRODUCT_SVC_S3_SECRET_KEY"
if ! mc admin user info local product_svc | grep -q product-svc-bucket; then
  mc admin policy attach local product-svc-bucket --user product_svc
fi
echo "s3_users: product_svc may use shop-images"
