"""Keep credentials out of logs, messages and reprs.

Camera URLs routinely carry `user:password@` (every RTSP camera on the market
does), and those URLs end up in reconnect logs and config errors. Everything
that prints a URL passes it through `redact_url` first.
"""
from __future__ import annotations

import re

# scheme://userinfo@ where userinfo has no '/', whitespace or '@'; works on any
# text, so a whole log line or an exception message can be passed through.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
# GStreamer pipelines pass credentials as properties: user-id=... user-pw=...
_PIPELINE_SECRETS = re.compile(r"(?P<key>\b(?:user-pw|password|passwd|pwd)\s*=\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s&]+)", re.I)
# Query strings such as ?password=...&token=...
_QUERY_SECRETS = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|auth|key|secret)=)(?P<value>[^&\s]+)", re.I)

MASK = "***"


def redact_url(text: str) -> str:
    """`text` with URL credentials (user:pass@, password=...) replaced by ***."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}:{MASK}@", text)
    text = _PIPELINE_SECRETS.sub(lambda m: f"{m['key']}{MASK}", text)
    return _QUERY_SECRETS.sub(lambda m: f"{m['key']}{MASK}", text)
