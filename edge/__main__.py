"""``python -m edge``: the REST edge on :8085."""

from __future__ import annotations

import sys

from common import telemetry
from common.http_server import serve_http
from common.settings import load_settings
from common.tls import TlsFiles, TlsMaterialMissingError
from edge.app import create_app
from edge.settings import EdgeSettings


def main() -> None:
    settings = load_settings(EdgeSettings, "edge")
    try:  # every upstream channel is mutual TLS: stop now, clearly, without the material
        TlsFiles.from_settings(settings).read()
    except TlsMaterialMissingError as exc:
        sys.exit(f"edge: {exc}")
    telemetry.setup("edge", log_level=settings.log_level, metrics_port=settings.metrics_port, host=settings.host)
    serve_http(create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
