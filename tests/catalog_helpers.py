"""Reading the catalog's documents straight from the document store, as a test checks them."""

from __future__ import annotations

from common.clients import mongo_client
from devstack.cluster import Cluster


async def held(cluster: Cluster, product_id: str) -> dict[str, int]:
    """A product's stock holds: reservation id -> units."""
    client = mongo_client(cluster.service_env_for("product_svc")["SHOP_MONGO_URL"])
    try:
        doc = await client["shop_product"]["products"].find_one({"_id": product_id}, {"holds": 1})
        assert doc is not None
        return {key: int(value) for key, value in (doc.get("holds") or {}).items()}
    finally:
        await client.close()
