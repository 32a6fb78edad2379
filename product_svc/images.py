"""Image objects in S3 (MinIO locally): boto3, run off the event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from common.clients import s3_client
from common.errors import UnavailableError
from product_svc.settings import ProductSettings

log = logging.getLogger("shop.product.images")

# Object keys hold fresh ids, so an object never changes under its key.
CACHE_CONTROL = "public, max-age=31536000, immutable"


def _unavailable(exc: Exception) -> UnavailableError:
    log.warning("object storage failed", exc_info=exc)
    return UnavailableError(
        "image storage is unavailable; try again shortly",
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": "s3"},
    )


class ImageStorage:
    def __init__(self, settings: ProductSettings) -> None:
        self.bucket = settings.s3_bucket
        self.client: Any = s3_client(settings)
        # Presigning is local computation (no request); it signs for the host browsers use.
        self._signer: Any = (
            s3_client(settings.model_copy(update={"s3_endpoint": settings.image_url_endpoint}))
            if settings.image_url_endpoint
            else self.client
        )
        self.url_ttl = settings.image_url_ttl
        self.public_base_url = settings.image_public_base_url.rstrip("/") if settings.image_public_base_url else None
        self._bucket_ready = False

    async def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (idempotent)."""
        if self._bucket_ready:
            return
        try:
            await asyncio.to_thread(self._ensure_bucket)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc
        self._bucket_ready = True

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.info("created bucket", extra={"bucket": self.bucket})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def put(self, key: str, content: bytes, content_type: str) -> None:
        await self.ensure_bucket()
        try:
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=content,
                ContentType=content_type,
                CacheControl=CACHE_CONTROL,
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    async def delete(self, key: str) -> None:
        """Remove an object; removing a missing one succeeds."""
        try:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    async def delete_quietly(self, keys: list[str]) -> None:
        """Best-effort removal (the catalog no longer refers to these objects)."""
        for key in keys:
            try:
                await self.delete(key)
            except UnavailableError:
                log.warning("left an orphaned image object", extra={"key": key})

    def url(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(key)}"
        url: str = self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_ttl
        )
        return url
