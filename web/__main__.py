"""``python -m web``: the storefront on :8086."""

from __future__ import annotations

import uvicorn

from common import telemetry
from web.app import create_app
from web.settings import WebSettings


def main() -> None:
    settings = WebSettings()
    telemetry.setup("web", log_level=settings.log_level, metrics_port=settings.metrics_port, host=settings.host)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        server_header=False,
    )


if __name__ == "__main__":
    main()
