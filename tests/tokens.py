"""Access tokens for tests, signed with the test cluster's own key (as user_svc would)."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.auth import TokenSigner
from devstack.cluster import Cluster


def signer(cluster: Cluster, ttl: int = 3600) -> TokenSigner:
    key = serialization.load_pem_private_key((cluster.keys / "jwt_private.pem").read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return TokenSigner(key, issuer="shop", audience="shop", ttl=ttl)


class Identities:
    """Metadata for calls as a fresh customer or as an admin."""

    def __init__(self, cluster: Cluster) -> None:
        self._signer = signer(cluster)

    def metadata(self, user_id: str, role: str = "customer") -> list[tuple[str, str]]:
        token, _ = self._signer.sign(user_id, role)
        return [("authorization", f"Bearer {token}")]

    def customer(self) -> tuple[str, list[tuple[str, str]]]:
        user_id = str(uuid.uuid4())
        return user_id, self.metadata(user_id)

    def admin(self) -> list[tuple[str, str]]:
        return self.metadata(str(uuid.uuid4()), "admin")
