"""Webhooks: a job's end posted to its ``callback_url``, signed, retried, never redirected.

- :mod:`worker.webhooks.signing`: ``X-Facemedia-Signature: t=<unix>,v1=<hex>`` (HMAC-SHA256 of
  ``"<t>." + body`` under the API key's webhook secret, the scheme Stripe uses) and its check.
- :mod:`worker.webhooks.guard`: the SSRF guard on callback URLs (checked at submission and again
  at each delivery, on the address the delivery then connects to).
- :mod:`worker.webhooks.delivery`: one delivery attempt of a job's summary, its backoff and the
  ``webhook_state`` it leaves in the ledger.

Importing this package loads only the standard library (no HTTP client, no ledger).
"""

from __future__ import annotations

from worker.webhooks.guard import BadCallbackUrl, check_callback_url
from worker.webhooks.signing import HEADER, sign, verify

__all__ = ["HEADER", "BadCallbackUrl", "check_callback_url", "sign", "verify"]
