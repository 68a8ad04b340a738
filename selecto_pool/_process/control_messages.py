"""The control channel's messages: signed, fresh, bounded and strictly shaped.

Any role that can connect to the database may ``LISTEN`` and ``NOTIFY`` on
``selecto_pool_control``. So a request counts only if it is signed with a
key derived from Django's ``SECRET_KEY`` (which every process of a project
shares), is recent and was not seen before; a reply counts only if it is
signed with the key of the request it answers and names that request's
nonce. The signatures are Django's ``Signer`` (HMAC-SHA256, with a key
derived from the secret and a purpose salt), checked before a byte of the
payload is decoded. A request does not name its reply channel: both sides
derive it from the nonce and the key, so that a role without the key can
neither read the replies nor write to their channel.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.signing import BadSignature, Signer
from django.utils.crypto import salted_hmac

from .._pool.stats import PoolStats
from ..errors import ControlMessageRejected

CHANNEL = "selecto_pool_control"
OPERATIONS = ("stats", "clear")
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7999
#: A request older than this, or dated this far ahead, is refused: clock skew
#: between hosts plus transit time.
MAX_AGE = 30.0
#: Direct pools (``start_pool()``, ``astart_pool()``) one reply may list.
MAX_DIRECT = 64
#: Nonces remembered against replay (requests come from operators and
#: migrate, a few per second at most).
REPLAY_MEMORY = 4096

_VERSION = 1
_REQUEST_SALT = "selecto_pool.control.request"
_REPLY_SALT = "selecto_pool.control.reply"
_CHANNEL_SALT = "selecto_pool.control.reply-channel"
_NONCE = re.compile(r"[0-9a-f]{32}")
_MAX_TEXT = 255
_REQUEST_KEYS = {"v", "op", "alias", "nonce", "ts", "reply"}
# PoolStats field -> the JSON types its value may have.
_STAT_TYPES: dict[str, tuple[type, ...]] = {
    f.name: {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}[
        str(f.type)
    ]
    for f in dataclasses.fields(PoolStats)
}


@dataclass(frozen=True)
class Request:
    operation: str
    alias: str | None
    nonce: str
    sent_at: float
    #: False for the broadcast after migrate, which nobody waits for.
    wants_reply: bool
    #: The secret that signed it; the reply is signed with it too.
    key: str = field(repr=False)

    @property
    def reply_channel(self) -> str:
        digest = salted_hmac(_CHANNEL_SALT, self.nonce, self.key, algorithm="sha256")
        return f"selecto_pool_reply_{digest.hexdigest()[:32]}"


def new_request(operation: str, alias: str | None, wants_reply: bool) -> Request:
    if operation not in OPERATIONS:
        raise ValueError(f"unknown control operation {operation!r}")
    return Request(
        operation=operation,
        alias=alias,
        nonce=secrets.token_hex(16),
        sent_at=time.time(),
        wants_reply=wants_reply,
        key=settings.SECRET_KEY,
    )


def sign_request(request: Request) -> str:
    body = {
        "v": _VERSION,
        "op": request.operation,
        "alias": request.alias,
        "nonce": request.nonce,
        "ts": request.sent_at,
        "reply": request.wants_reply,
    }
    return _signed(body, request.key, _REQUEST_SALT)


def open_request(payload: str, now: float) -> Request:
    """The request in ``payload``, or ``ControlMessageRejected`` saying why."""
    body, key = _unsigned(payload, _REQUEST_SALT)
    if not isinstance(body, dict) or set(body) != _REQUEST_KEYS:
        raise ControlMessageRejected("a signed request of an unknown shape")
    operation, alias, nonce = body["op"], body["alias"], body["nonce"]
    sent_at, wants_reply = body["ts"], body["reply"]
    if (
        body["v"] != _VERSION
        or operation not in OPERATIONS
        or not (alias is None or _is_text(alias))
        or not (isinstance(nonce, str) and _NONCE.fullmatch(nonce))
        or not _is_number(sent_at)
        or not isinstance(wants_reply, bool)
    ):
        raise ControlMessageRejected("a signed request with invalid fields")
    if abs(now - sent_at) > MAX_AGE:
        raise ControlMessageRejected(
            f"a request dated {now - sent_at:+.0f} s from now (clocks apart?)"
        )
    return Request(operation, alias, nonce, float(sent_at), wants_reply, key)


def sign_reply(request: Request, answer: dict[str, Any]) -> str:
    return _signed(
        {"v": _VERSION, "nonce": request.nonce, **answer}, request.key, _REPLY_SALT
    )


def open_reply(payload: str, request: Request, sender: int) -> dict[str, Any]:
    """The answer to ``request`` in ``payload``, sent by backend ``sender``."""
    body, _ = _unsigned(payload, _REPLY_SALT, keys=[request.key])
    if not isinstance(body, dict) or body.get("nonce") != request.nonce:
        raise ControlMessageRejected("a reply to another request")
    host, pid, alias = body.get("host"), body.get("pid"), body.get("alias")
    if (
        body.get("v") != _VERSION
        or not _is_text(host)
        or not _is_count(pid)
        or not _is_text(alias)
        or request.alias not in (None, alias)
        or body.get("backend") != sender
    ):
        raise ControlMessageRejected("a signed reply with invalid fields")
    answer = {"host": host, "pid": pid, "alias": alias, "backend": sender}
    if request.operation == "clear":
        if not _is_count(body.get("cleared")):
            raise ControlMessageRejected("a clear reply without a count")
        answer["cleared"] = body["cleared"]
    else:
        answer["stats"] = _valid_stats(body.get("stats"))
    answer["direct"] = _valid_direct(body.get("direct", []), request.operation)
    if not _is_count(omitted := body.get("direct_omitted", 0)):
        raise ControlMessageRejected("a reply with an invalid direct_omitted")
    answer["direct_omitted"] = omitted
    return answer


def _valid_direct(entries: Any, operation: str) -> list[dict[str, Any]]:
    """The direct pools a reply lists: a name each, and its stats or count."""
    if not isinstance(entries, list) or len(entries) > MAX_DIRECT:
        raise ControlMessageRejected("a reply with an invalid list of direct pools")
    valid = []
    for entry in entries:
        if not isinstance(entry, dict) or not _is_text(entry.get("name")):
            raise ControlMessageRejected("a reply with an unnamed direct pool")
        if operation == "clear":
            if not _is_count(entry.get("cleared")):
                raise ControlMessageRejected("a direct pool's clear without a count")
            valid.append({"name": entry["name"], "cleared": entry["cleared"]})
        else:
            stats = _valid_stats(entry.get("stats"))
            valid.append({"name": entry["name"], "stats": stats})
    return valid


class ReplayGuard:
    """The nonces already accepted, kept until they are too old to come back."""

    def __init__(self, capacity: int = REPLAY_MEMORY):
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def admit(self, request: Request, now: float) -> None:
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if request.nonce in self._seen:
            raise ControlMessageRejected("a request seen before (replayed?)")
        if len(self._seen) >= self._capacity:
            raise ControlMessageRejected("too many recent requests to remember")
        # Forgotten once MAX_AGE has passed both ways: it would be refused then.
        self._seen[request.nonce] = now + 2 * MAX_AGE


def _signed(body: dict[str, Any], key: str, salt: str) -> str:
    payload: str = _signer(key, salt).sign_object(body)
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"control message of {len(payload)} bytes is too long")
    return payload


def _unsigned(
    payload: str, salt: str, keys: list[str] | None = None
) -> tuple[Any, str]:
    """Check the size, then the signature, and only then decode."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ControlMessageRejected(f"a message of {len(payload)} characters")
    if keys is None:
        keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    for key in keys:
        signer = _signer(key, salt)
        try:
            signer.unsign(payload)
        except BadSignature:
            continue
        try:
            return signer.unsign_object(payload), key
        except Exception:
            # Signed, so sent by a holder of the key: a bug, not an attack.
            raise ControlMessageRejected("a signed message that won't decode") from None
    raise ControlMessageRejected("not signed with this project's SECRET_KEY")


def _signer(key: str, salt: str) -> Signer:
    return Signer(key=key, salt=salt, algorithm="sha256", fallback_keys=[])


def _valid_stats(stats: Any) -> dict[str, Any]:
    """Known PoolStats fields only, each of its type (newer ones dropped)."""
    if not isinstance(stats, dict) or not _is_number(stats.get("started_at")):
        raise ControlMessageRejected("a stats reply without stats")
    valid = {}
    for key, value in stats.items():
        kinds = _STAT_TYPES.get(key)
        if kinds is None:
            continue
        if kinds == (str,):
            ok = _is_text(value)
        elif kinds == (bool,):
            ok = isinstance(value, bool)
        else:
            ok = _is_number(value) and isinstance(value, kinds)
        if not ok:
            raise ControlMessageRejected(f"stats field {key!r} is invalid")
        valid[key] = value
    return valid


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_TEXT


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
