"""docs/API.md's *Webhooks* section: its Python check accepts our signature and refuses a
tampered body, a wrong secret and a stale timestamp."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from worker.webhooks import sign

ROOT = Path(__file__).resolve().parents[2]


def _example() -> Any:
    text = (ROOT / "docs" / "API.md").read_text()
    section = text.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "no Python example in docs/API.md, Webhooks"
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "docs/API.md", "exec"), namespace)  # our own docs
    return namespace["verify"]


def test_the_documented_python_check_verifies_a_real_signature() -> None:
    verify = _example()
    secret = "whsec_example0123456789"
    body = b'{"job_id":"0123","status":"succeeded"}'
    header = sign(secret.encode(), body, int(time.time()))
    assert verify(secret, body, header)
    assert not verify(secret, body + b" ", header)
    assert not verify("whsec_other", body, header)
    assert not verify(secret, body, sign(secret.encode(), body, int(time.time()) - 400))
    assert not verify(secret, body, "garbage")


def test_the_section_names_the_settings_and_codes_the_code_uses() -> None:
    from worker.webhooks import delivery

    section = (ROOT / "docs" / "API.md").read_text().split("\n## Webhooks\n", 1)[1]
    for name in (
        "webhook_max_attempts",
        "webhook_backoff_s",
        "webhook_timeout_s",
        "callback_allow_hosts",
        "FACEMEDIA_API__CALLBACK_ALLOW_HOSTS",
        "X-Facemedia-Signature",
    ):
        assert name in section, name
    for code in (
        delivery.TIMEOUT,
        delivery.REFUSED,
        delivery.BLOCKED,
        delivery.NO_SECRET,
        delivery.UNRESOLVABLE,
        delivery.CONNECT_ERROR,
        delivery.TLS_ERROR,
        delivery.BAD_RESPONSE,
        delivery.BAD_URL,
    ):
        assert f"`{code}`" in section, code
