"""URL checks shared by every service that accepts one: never an exception, only a verdict."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def _split(text: str) -> SplitResult | None:
    # urlsplit raises on a broken IPv6 host ("http://[::1") and .port on a port out of range.
    if any(c.isspace() or ord(c) < 32 for c in text):
        return None
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        return None
    return parts


def is_web_url(text: str) -> bool:
    """An absolute http or https URL with a host: where a webhook can be delivered."""
    parts = _split(text)
    return parts is not None and parts.scheme in {"http", "https"} and bool(parts.hostname)


def is_uri(text: str) -> bool:
    """Any absolute URI (https:, s3:, urn:...), as an attachment's location."""
    parts = _split(text)
    return parts is not None and bool(parts.scheme and (parts.netloc or parts.path))
