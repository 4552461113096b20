"""What the telemetry database keeps of a conversation's name: a keyed digest, never the name itself.

The name is often the OpenAI ``user`` field, which may identify a person; the digest lets a sticky session find
its model again without the database holding anything a list of candidate names could be tested against.
"""

from __future__ import annotations

import hashlib
import hmac

SESSION_SECRET = "session_secret"  # the settings row that keys session digests
SESSION_SECRET_ENV = "MOAI_SESSION_SECRET"  # when set, the key instead (every replica must set the same)


def session_digest(session: str | None, secret: bytes) -> str | None:
    """What the database keeps of a conversation's name: an HMAC-SHA256 digest under the deployment's secret
    (``TelemetryStore.session_secret``). The name is often the OpenAI ``user`` field, which may identify a person
    (an email); stickiness only needs to find the same name again, and without the secret a list of candidate
    names cannot be tested against the stored digests. Its length is fixed too, whatever the client sent (the
    column holds 128 characters)."""
    if not session:
        return None
    return "hmac-sha256:" + hmac.new(secret, session.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def legacy_session_digest(session: str) -> str:
    """The unkeyed digest older versions stored, looked up so that their sessions stay sticky (never written)."""
    return "sha256:" + hashlib.sha256(session.encode("utf-8", "surrogatepass")).hexdigest()
