"""Settings of the web process (``SHOP_*`` environment variables)."""

from __future__ import annotations

from common.settings import SERVICE_PORTS, CommonSettings


class WebSettings(CommonSettings):
    port: int = SERVICE_PORTS["web"]
    # Where the edge listens: SHOP_EDGE_URL (a full base URL) wins over SHOP_EDGE_ADDR
    # (host:port, as devstack hands every process the address of the others).
    edge_url: str = ""
    edge_addr: str = f"127.0.0.1:{SERVICE_PORTS['edge']}"
    # Deadline of every call to the edge, in seconds.
    edge_timeout: float = 10.0
    # Mark the session cookies Secure (behind HTTPS).
    cookie_secure: bool = False

    @property
    def edge_base_url(self) -> str:
        return (self.edge_url or f"http://{self.edge_addr}").rstrip("/")
