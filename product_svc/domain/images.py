"""Product images: what an upload may be (sniffed from its bytes), its display
name, and the object key it is stored under."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from common.errors import FailedPreconditionError, FieldViolation, InvalidArgumentError

FILENAME_MAX = 255
IMAGE_TYPES: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
UNSUPPORTED_IMAGE_TYPE = "UNSUPPORTED_IMAGE_TYPE"


@dataclass(frozen=True)
class Image:
    id: str
    key: str  # object key in the bucket
    content_type: str
    size_bytes: int
    filename: str
    created_at: datetime


@dataclass(frozen=True)
class Upload:
    """An image as a caller uploads it (before any check)."""

    product_id: str
    content: bytes
    filename: str


def sniff_image_type(content: bytes) -> str | None:
    """The image type named by the content's magic bytes, whatever the file is called."""
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(content: bytes, max_bytes: int) -> str:
    """The content type of an acceptable image, or INVALID_ARGUMENT with the reason."""
    if len(content) > max_bytes:
        raise InvalidArgumentError(
            f"the image is {len(content)} bytes; the limit is {max_bytes}",
            violations=[FieldViolation("content", f"must be at most {max_bytes} bytes")],
            reason=IMAGE_TOO_LARGE,
            metadata={"max_bytes": str(max_bytes)},
        )
    found = sniff_image_type(content)
    if found is None:
        raise InvalidArgumentError(
            "the file is not a JPEG, PNG or WebP image (checked by its content, not its name)",
            violations=[FieldViolation("content", "must be a JPEG, PNG or WebP image")],
            reason=UNSUPPORTED_IMAGE_TYPE,
        )
    return found


def too_many_images(max_count: int) -> FailedPreconditionError:
    return FailedPreconditionError(f"a product has at most {max_count} images; delete one first")


def clean_filename(name: str) -> str:
    """The uploaded name for display: no path, no control characters, bounded."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cs"))
    return base.strip()[:FILENAME_MAX]


def image_key(product_id: str, image_id: str, content_type: str) -> str:
    """The object key: derived from ids only, never from the uploaded name."""
    return f"products/{product_id}/{image_id}.{IMAGE_TYPES[content_type]}"
