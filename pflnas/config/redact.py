"""Storage URLs without their passwords: what pflnas writes to config.yaml and prints must not hold a secret.
A ``${VAR}`` placeholder is kept: the secret is read from the environment only when connecting."""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\$\{\w+\}|\$\w+")  # ${VAR} or $VAR, read from the environment when connecting
_URL_SECRETS = (
    re.compile(r"(?P<head>://[^:/?#@]*:)(?P<secret>[^/?#]*)@"),  # user:password@ (to the last @ of the host)
    re.compile(r"(?P<head>[?&;]password=)(?P<secret>[^&;#]*)", re.IGNORECASE),  # ?password=... (libpq)
)


def redact_url(url: str) -> str:
    """``url`` without a literal password, in the user part (``postgresql://user:secret@host`` ->
    ``postgresql://user:***@host``) or the query (``?password=secret``); a ``${VAR}`` or ``$VAR``
    placeholder is kept, so a URL that has one is left as it is."""

    def hide(m: re.Match[str]) -> str:
        secret = m["secret"]
        kept = secret == "" or _PLACEHOLDER.fullmatch(secret)
        return m.group(0) if kept else m["head"] + "***" + m.group(0)[len(m["head"]) + len(secret) :]

    for pattern in _URL_SECRETS:
        url = pattern.sub(hide, url)
    return url
