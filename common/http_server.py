"""Running an HTTP process (the edge, the storefront): uvicorn with the shop's settings."""

from __future__ import annotations

from typing import Any

from common.settings import CommonSettings


def serve_http(app: Any, settings: CommonSettings, port: int) -> None:
    """Serve ``app`` on ``settings.host``:``port`` until SIGTERM, then give requests in
    flight ``shutdown_grace`` seconds.  Logs are the shop's JSON lines (its access log
    is the app's own middleware), and no server header is sent.  uvicorn's own
    reading of X-Forwarded-For/-Proto (on by default for 127.0.0.1) is off: the
    edge decides itself which proxies it believes (``SHOP_TRUSTED_PROXIES``)."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        server_header=False,
        proxy_headers=False,
    )
