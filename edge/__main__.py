"""``python -m edge``: the REST edge on :8085."""

from __future__ import annotations

import uvicorn

from common import telemetry
from edge.app import create_app
from edge.settings import EdgeSettings


def main() -> None:
    settings = EdgeSettings()
    telemetry.setup("edge", log_level=settings.log_level, host=settings.host)
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
