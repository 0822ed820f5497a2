"""Web Push's pure parts (+#12): which endpoints are accepted, what a push service's answer
means, the VAPID key as configured, and a request the subscriber can decrypt and verify."""

from __future__ import annotations

import json

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization

from api.push_queries import endpoint_refusal
from carewatch import vapid
from notifier.push import ClaimedPush, build_request, outcome
from tests.fixtures.push import Subscriber, VapidKeys, b64url, unb64url, vapid_refusal

NOW_S = 1_800_000_000


@pytest.mark.parametrize(
    ("endpoint", "allow_http_loopback", "refused"),
    [
        pytest.param("https://fcm.googleapis.com/fcm/send/abc", False, False, id="https"),
        pytest.param("http://push.example/abc", False, True, id="http"),
        pytest.param("http://push.example/abc", True, True, id="http-not-loopback"),
        pytest.param("http://127.0.0.1:8080/push/a", False, True, id="loopback-not-allowed"),
        pytest.param("http://127.0.0.1:8080/push/a", True, False, id="loopback-v4"),
        pytest.param("http://[::1]:8080/push/a", True, False, id="loopback-v6"),
        pytest.param("http://localhost:8080/push/a", True, False, id="localhost"),
        pytest.param("http://10.0.0.1/push", True, True, id="private-not-loopback"),
        pytest.param("ftp://push.example/abc", True, True, id="ftp"),
    ],
)
def test_only_https_endpoints_but_loopback_when_allowed(
    endpoint: str, allow_http_loopback: bool, refused: bool
) -> None:
    """https always; http only to a loopback address, and only when the setting allows it."""
    refusal = endpoint_refusal(endpoint, allow_http_loopback=allow_http_loopback)
    assert (refusal is not None) == refused


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        pytest.param(201, "delivered", id="201"),
        pytest.param(200, "delivered", id="200"),
        pytest.param(None, "retry", id="no-answer"),
        pytest.param(404, "gone", id="404"),
        pytest.param(410, "gone", id="410"),
        pytest.param(429, "retry", id="429"),
        pytest.param(408, "retry", id="408"),
        pytest.param(500, "retry", id="500"),
        pytest.param(503, "retry", id="503"),
        pytest.param(400, "dead", id="400"),
        pytest.param(403, "dead", id="403-bad-vapid"),
        pytest.param(413, "dead", id="413-too-large"),
    ],
)
def test_what_a_push_services_answer_means(status: int | None, meaning: str) -> None:
    """Gone subscriptions are disabled; our own mistakes are not retried; the rest is."""
    assert outcome(status) == meaning


def test_the_vapid_key_loads_as_pem_or_raw_with_the_same_public_key() -> None:
    """The setting may hold PEM, its body on one line, or the raw key in base64url: the same
    key pair each way."""
    keys = VapidKeys.generate()
    from_pem = vapid.load(keys.private_pem)
    private = serialization.load_pem_private_key(keys.private_pem.encode(), password=None)
    raw = private.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    from_raw = vapid.load(b64url(raw))
    one_line = vapid.load("".join(keys.private_pem.strip().splitlines()[1:-1]))
    assert vapid.public_key(from_pem) == vapid.public_key(from_raw) == keys.public_b64
    assert vapid.public_key(one_line) == keys.public_b64
    assert len(unb64url(keys.public_b64)) == 65


@pytest.mark.parametrize("value", ["", "not a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END"])
def test_a_bad_vapid_key_is_refused_with_the_settings_name(value: str) -> None:
    """A key that is not one says which setting to fix."""
    with pytest.raises(vapid.VapidKeyError, match="CAREWATCH_VAPID_PRIVATE_KEY"):
        vapid.load(value)


def test_a_push_request_is_signed_for_the_endpoints_origin_and_decrypts() -> None:
    """The request carries a VAPID header valid for the endpoint's origin and an aes128gcm body
    that the subscriber's keys decrypt to the payload (with the push's id)."""
    keys = VapidKeys.generate()
    subscriber = Subscriber("https://push.example:8443/send/abc")
    browser = subscriber.json()["keys"]
    push = ClaimedPush(
        id=7,
        subscription_id=3,
        alert_id=42,
        payload={"alert_id": 42, "rule": "alarm_pressed", "lang": "sv"},
        attempts=1,
        endpoint=subscriber.endpoint,
        p256dh=browser["p256dh"],
        auth=browser["auth"],
    )
    request = build_request(
        push, vapid.load(keys.private_pem), subject="mailto:a@b.se", ttl_s=600, now_s=NOW_S
    )
    assert request.url == subscriber.endpoint
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert (request.headers["TTL"], request.headers["Topic"]) == ("600", "alert-42")
    refusal = vapid_refusal(
        request.headers["Authorization"],
        public_key=keys.public_b64,
        audience="https://push.example:8443",
        now_s=NOW_S,
    )
    assert refusal is None
    plain = http_ece.decrypt(
        request.body,
        private_key=subscriber.private_key,
        auth_secret=subscriber.auth,
        version="aes128gcm",
    )
    assert json.loads(plain) == {"id": 7, **push.payload}
