from __future__ import annotations

import hashlib
import hmac

from segstream.stream.delivery.signing import sign, verify

SECRET = b"0123456789abcdef-secret"
BODY = b'{"events":[]}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_700_000_000, BODY) == f"t=1700000000,v1={expected}"


def test_a_receiver_accepts_the_signature_and_rejects_tampering() -> None:
    header = sign(SECRET, 1_700_000_000, BODY)
    assert verify(SECRET, header, BODY, now=1_700_000_010)
    assert not verify(SECRET, header, BODY + b" ", now=1_700_000_010)
    assert not verify(b"another-secret-0000", header, BODY, now=1_700_000_010)
    assert not verify(SECRET, header, BODY, now=1_700_000_000 + 301)  # replayed too late
    assert not verify(SECRET, "garbage", BODY, now=1_700_000_000)
