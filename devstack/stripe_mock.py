"""stripe-mock: Stripe's API on loopback, for order_svc's Stripe adapter.

stripe-mock (github.com/stripe/stripe-mock, built by ``devstack/provision/go_tools.sh``)
routes every Stripe API URL, validates each request's parameters against Stripe's
OpenAPI spec (unknown or mistyped parameters answer 400, a missing or malformed
secret key 401) and answers with a fixture of the resource, reflecting scalar
parameters such as ``amount`` and ``currency`` and echoing ``Idempotency-Key``.
It keeps no state: nothing sent is stored, every id it hands out is random, and
no card, token or amount changes what it answers (no declines, no 3-D Secure).

What it answers is its own bundled fixtures file (copied next to the binary at
build time) with one change: a PaymentIntent comes back ``succeeded``, as Stripe
answers a confirmation that went through.  The bundled PaymentIntent is
``requires_payment_method`` with a ``last_payment_error``: what Stripe answers a
failed confirmation, which the adapter reads as a decline.  ``payment_intent``
picks another variant for one server (tests start one per outcome they need);
``{}`` keeps the bundled answer.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from common.settings import DEV_SECRETS
from devstack.paths import BIN
from devstack.servers import Server
from devstack.servers.base import binary

# What a PaymentIntent looks like after a confirmation that succeeded.
SUCCEEDED: dict[str, Any] = {
    "status": "succeeded",
    "last_payment_error": None,
    "next_action": None,
    "canceled_at": None,
    "latest_charge": "ch_3MockSucceeded",
}
# A confirmation declined for insufficient funds (Stripe's card_error shape).
INSUFFICIENT_FUNDS: dict[str, Any] = {
    "status": "requires_payment_method",
    "last_payment_error": {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    },
}
# The secret key the local cluster uses (common/settings.py); stripe-mock accepts any sk_test_<x>.
DEV_SECRET_KEY = DEV_SECRETS["stripe_secret_key"]


def fixtures_file() -> Path:
    path = BIN / "stripe-mock-fixtures.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `make deps`, or `FORCE=1 bash devstack/provision/go_tools.sh stripe-mock`"
            " when the binary is there already"
        )
    return path


class StripeMock(Server):
    name = "stripe_mock"
    ready_timeout = 30.0

    def __init__(
        self, data: Path, ports: dict[str, int] | None = None, payment_intent: dict[str, Any] | None = None
    ) -> None:
        super().__init__(data, ports)
        self.payment_intent = SUCCEEDED if payment_intent is None else payment_intent

    def port_names(self) -> tuple[str, ...]:
        # stripe-mock always serves HTTPS too (on *:12112 unless told otherwise): pin it to loopback.
        return ("port", "https")

    @property
    def fixtures(self) -> Path:
        return self.data / "fixtures.json"

    def prepare(self) -> None:
        fixtures = json.loads(fixtures_file().read_text())
        fixtures["resources"]["payment_intent"].update(self.payment_intent)
        self.fixtures.write_text(json.dumps(fixtures))

    def argv(self) -> list[str]:
        return [
            binary("stripe-mock"),
            "-http-addr",
            f"127.0.0.1:{self.ports['port']}",
            "-https-addr",
            f"127.0.0.1:{self.ports['https']}",
            "-fixtures",
            str(self.fixtures),
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    def ready(self) -> bool:
        request = urllib.request.Request(
            f"{self.url}/v1/payment_intents/pi_ready", headers={"Authorization": f"Bearer {DEV_SECRET_KEY}"}
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)

    def env(self) -> dict[str, str]:
        return {"SHOP_STRIPE_API_BASE": self.url}
