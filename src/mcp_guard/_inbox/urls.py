"""An inbox store's URL as messages may show it: never its password, nor a query option's value.

A malformed URL must be shown as safely as a good one, so nothing here relies on :func:`urllib.parse.urlsplit`
(it raises on some, e.g. ``redis://[::1``).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Query options whose value may be a secret (redis-py takes ?password= and ?username= as well as the userinfo).
_SECRET_OPTION = re.compile(r"pass|secret|token|auth|key|user|cred", re.IGNORECASE)
HIDDEN = "***"


def scheme_of(url: object) -> str | None:
    """The URL's scheme, lower case (as urllib reads it), or ``None``."""
    match = _SCHEME.match(url) if isinstance(url, str) else None
    return match.group(1).lower() if match is not None else None


def _parts(url: str) -> tuple[str, str, str, str]:
    """``url`` as (up to ``://``, its userinfo, host and path, its query and fragment without the ``?``).

    The userinfo runs to the *last* ``@``, as urllib and redis-py read it: a password holding an unescaped ``/``
    or ``?`` makes a URL neither can read, and reading it so still hides the password whole.
    """
    head, sep, tail = url.partition("://")
    if not sep:  # no scheme: an "@" still ends a userinfo ("//:pw@host", "user:pw@host")
        head, tail = "", url
    else:
        head += sep
    userinfo, _, rest = tail.rpartition("@")
    where, _, query = rest.partition("?")
    return head, userinfo, where, query


def shown_url(url: object) -> str:
    """``url`` with its userinfo (user and password) and every query option's value shown as ``***``:
    ``redis://***@host:6379/0?socket_timeout=***``. The host, port, path and option names stay, to find it by."""
    text = url if isinstance(url, str) else repr(url)
    head, userinfo, where, query = _parts(text)
    shown = head + (f"{HIDDEN}@" if userinfo else "") + where
    if query:
        names = [item.partition("=")[0] for item in query.partition("#")[0].split("&")]
        shown += "?" + "&".join(f"{name}={HIDDEN}" for name in names)
    return shown


def hide_secrets(message: str, url: str) -> str:
    """``message`` (a driver's error about ``url``) with whatever :func:`shown_url` hides replaced by ``***``."""
    _head, userinfo, _where, query = _parts(url)
    secrets = [userinfo, userinfo.partition(":")[2]]
    for name, _, value in (item.partition("=") for item in query.partition("#")[0].split("&")):
        if _SECRET_OPTION.search(name):
            secrets.append(value)
    secrets += [unquote(s) for s in secrets]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):  # longest first: whole, then parts
        message = message.replace(secret, HIDDEN)
    return message
