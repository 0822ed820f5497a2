"""A local Web Push service that checks every push as a real one would, and decrypts it as the
browser then does: the tests' counterpart of the notifier, and ``carewatch bench alerts``' phone.

Also a browser's subscription keys (:class:`Subscriber`) and a deployment's VAPID key
(:class:`VapidKeys`), made here so that nothing but loopback is needed.

:class:`PushService` is ``http.server`` in a thread on a free loopback port. Each path is one
subscription's endpoint. For every POST it verifies the VAPID ``Authorization`` header from the
RFC, not through the library the notifier uses (ES256 over the JWT with the key in ``k``, which
must be the deployment's; ``aud`` this service's origin; ``exp`` in the future, at most 24 h
away; ``sub`` a mailto:), then decrypts the aes128gcm body with the subscriber's private key and
auth secret (RFC 8291). It answers the statuses it was told to (e.g. 410), else 201; a push
that does not verify or decrypt is answered 401. Every push is kept with the moment it arrived
(``time.time()`` as its handler starts, before the body is read).

``cryptography`` (the VAPID check, the keys) and ``http_ece`` (the decryption) are runtime
dependencies of their own: ``pywebpush`` needs both for the notifier anyway.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tools.local.loopback_http import LoopbackPostServer

# RFC 8292 §2: a token's exp is at most 24 hours after the request.
VAPID_MAX_LIFETIME_S: Final = 24 * 3600


def b64url(data: bytes) -> str:
    """``data`` in unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """The bytes of unpadded base64url ``text``."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The public half of ``key`` as an uncompressed P-256 point (65 bytes)."""
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@dataclass(frozen=True)
class VapidKeys:
    """A deployment's VAPID key pair, as the settings take it (PEM) and browsers (base64url)."""

    private_pem: str
    public_b64: str

    @classmethod
    def generate(cls) -> VapidKeys:
        """A new P-256 key pair."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(pem, b64url(public_bytes(key)))


@dataclass(frozen=True)
class Subscriber:
    """One browser's push subscription: its P-256 key pair and auth secret (RFC 8291)."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def json(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives the board to post."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public_bytes(self.private_key)), "auth": b64url(self.auth)},
        }


@dataclass(frozen=True)
class Pushed:
    """One push the service received: its refusal (None: VAPID valid), payload and answer."""

    path: str
    headers: dict[str, str]
    refusal: str | None
    payload: dict[str, Any] | None
    status: int
    received_at: float  # time.time() when the request's handler started


def vapid_refusal(header: str, *, public_key: str, audience: str, now_s: float) -> str | None:
    """Why ``Authorization: vapid t=...,k=...`` is not a valid VAPID header (RFC 8292)."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        return f"scheme {scheme!r}"
    try:
        parts = dict(part.strip().split("=", 1) for part in params.split(","))
    except ValueError:
        return "malformed parameters"
    if parts.get("k") != public_key:
        return "k is not the deployment's key"
    try:
        signed, _, signature = parts["t"].rpartition(".")
        head_b64, _, claims_b64 = signed.partition(".")
        head = json.loads(unb64url(head_b64))
        claims = json.loads(unb64url(claims_b64))
        raw = unb64url(signature)
    except (KeyError, ValueError) as error:
        return f"malformed token: {error}"
    if head.get("alg") != "ES256" or len(raw) != 64:
        return f"not ES256: {head}"
    verifier = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public_key))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        verifier.verify(der, signed.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "bad signature"
    if claims.get("aud") != audience:
        return f"aud {claims.get('aud')!r}"
    if not now_s < claims.get("exp", 0) <= now_s + VAPID_MAX_LIFETIME_S:
        return f"exp {claims.get('exp')!r}"
    if not str(claims.get("sub", "")).startswith("mailto:"):
        return f"sub {claims.get('sub')!r}"
    return None


class PushService(LoopbackPostServer):
    """A local push service: endpoints per subscriber, VAPID checked, payloads decrypted."""

    def __init__(self, vapid_public_key: str) -> None:
        super().__init__("push-service")
        self.vapid_public_key = vapid_public_key
        self._lock = threading.Lock()
        self._subscribers: dict[str, Subscriber] = {}
        self._answers: dict[str, collections.deque[int]] = {}
        self._received: list[Pushed] = []

    def subscriber(self, name: str, answers: Iterable[int] = ()) -> Subscriber:
        """A new browser subscription with an endpoint here; it is answered ``answers`` first."""
        path = f"/push/{name}"
        subscriber = Subscriber(self.origin + path)
        with self._lock:
            self._subscribers[path] = subscriber
            self._answers[path] = collections.deque(answers)
        return subscriber

    def received(self, subscriber: Subscriber) -> list[Pushed]:
        """Every push to ``subscriber`` so far, in the order they were taken."""
        path = subscriber.endpoint.removeprefix(self.origin)
        with self._lock:
            return [push for push in self._received if push.path == path]

    def take(self, handler: BaseHTTPRequestHandler, body: bytes, arrived_at: float) -> None:
        """Check VAPID, decrypt, keep the push, answer it (``origin`` is the VAPID ``aud``)."""
        with self._lock:
            subscriber = self._subscribers.get(handler.path)
            answers = self._answers.get(handler.path)
            status = answers.popleft() if answers else 201
        refusal = vapid_refusal(
            handler.headers.get("Authorization", ""),
            public_key=self.vapid_public_key,
            audience=self.origin,
            now_s=time.time(),
        )
        payload: dict[str, Any] | None = None
        if subscriber is None:
            refusal, status = "unknown endpoint", 404
        elif refusal is None:
            payload, refusal = _decrypted(handler.headers.get("Content-Encoding"), body, subscriber)
        if refusal is not None and status < 300:
            status = 401
        with self._lock:
            self._received.append(
                Pushed(
                    handler.path,
                    dict(handler.headers.items()),
                    refusal,
                    payload,
                    status,
                    arrived_at,
                )
            )
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def _decrypted(
    encoding: str | None, body: bytes, subscriber: Subscriber
) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON payload, None), or (None, why it could not be read), as the browser would."""
    if encoding != "aes128gcm":
        return None, f"Content-Encoding {encoding!r}"
    try:
        plain = http_ece.decrypt(
            body,
            private_key=subscriber.private_key,
            auth_secret=subscriber.auth,
            version="aes128gcm",
        )
        payload = json.loads(plain)
    except (http_ece.ECEException, ValueError) as error:
        return None, f"undecryptable: {error}"
    if not isinstance(payload, dict):
        return None, f"payload is not a JSON object: {payload!r}"
    return payload, None
