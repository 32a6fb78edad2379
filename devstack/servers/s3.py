"""S3: MinIO, with a user per service allowed its own bucket only."""

from __future__ import annotations

import urllib.request

from devstack.credentials import passwords
from devstack.servers.base import Server, binary

# MinIO's root user: local-cluster-only credentials (see common/settings.py DEV_SECRETS), for
# devstack's own set-up alone; product_svc gets a user of its own (S3.after_ready).
S3_ACCESS_KEY = "shop-dev"
S3_SECRET_KEY = "shop-dev-secret-not-for-production"
# product_svc's bucket (common/settings.py S3Settings) and its MinIO user, allowed that bucket only.
S3_BUCKET = "shop-images"
S3_USERS = {"product_svc": S3_BUCKET}


class S3(Server):
    name = "s3"

    def argv(self) -> list[str]:
        return [
            binary("minio"),
            "server",
            str(self.data / "objects"),
            "--quiet",
            "--address",
            f"127.0.0.1:{self.ports['port']}",
        ]

    def process_env(self) -> dict[str, str]:
        return {
            "MINIO_ROOT_USER": S3_ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": S3_SECRET_KEY,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        }

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as response:
            return bool(response.status == 200)

    def after_ready(self) -> None:
        """A MinIO user per service, with a policy for its bucket alone (MinIO's admin API,
        through the minio package's client; no ``mc`` needed)."""
        from minio.credentials.providers import StaticProvider
        from minio.error import MinioAdminException
        from minio.minioadmin import MinioAdmin

        root = StaticProvider(S3_ACCESS_KEY, S3_SECRET_KEY)
        admin = MinioAdmin(endpoint=self.endpoint.removeprefix("http://"), credentials=root, secure=False)
        secret = self.passwords()
        for user, bucket in S3_USERS.items():
            arns = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": arns}]}
            admin.policy_add(f"{user}-bucket", policy=policy)
            admin.user_add(user, secret[user])
            try:
                admin.attach_policy([f"{user}-bucket"], user=user)
            except MinioAdminException as exc:  # attached at an earlier start
                if "already" not in str(exc).lower():
                    raise

    def passwords(self) -> dict[str, str]:
        return passwords(self.data, S3_USERS)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    def env(self) -> dict[str, str]:
        return {"SHOP_S3_ENDPOINT": self.endpoint}

    def admin_env(self) -> dict[str, str]:
        """S3 settings with the root keys: devstack's own set-up and the tests' inspection."""
        return {**self.env(), "SHOP_S3_ACCESS_KEY": S3_ACCESS_KEY, "SHOP_S3_SECRET_KEY": S3_SECRET_KEY}

    def service_env(self, service: str) -> dict[str, str]:
        if service not in S3_USERS:
            return {}
        return {
            "SHOP_S3_BUCKET": S3_USERS[service],
            "SHOP_S3_ACCESS_KEY": service,
            "SHOP_S3_SECRET_KEY": self.passwords()[service],
        }
