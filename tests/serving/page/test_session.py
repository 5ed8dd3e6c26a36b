"""Twin-page session cookies: signed for one key, expiring, ended by revoking the key, unforgeable without the
server's secret; the secret is created once, owner-only, and every process reads the same one."""

from __future__ import annotations

import stat
import threading

import pytest

from serving.page.session import (
    COOKIE_NAME,
    SessionSigner,
    came_over_https,
    cookie_token,
    load_or_create_secret,
    session_cookie,
)
from twin_imaging.access import ApiKeyEntry, hash_api_key

NURSE = ApiKeyEntry(
    name="ward-7", role="clinician", sha256=hash_api_key("tik_one"), created="2026-01-01T00:00:00+00:00"
)


def lookup_of(*entries):
    return {e.name: e for e in entries}.get


@pytest.fixture
def signer(tmp_path) -> SessionSigner:
    return SessionSigner(load_or_create_secret(tmp_path / "page_session.key"), lifetime_s=3600)


def test_a_cookie_stands_for_its_key_until_it_expires(signer):
    token = signer.issue(NURSE, now=1000.0)
    assert "tik_one" not in token and NURSE.sha256 not in token
    assert signer.verify(token, lookup_of(NURSE), now=1001.0) == NURSE
    assert signer.verify(token, lookup_of(NURSE), now=1000.0 + 3600) is None  # expired


def test_revoking_or_replacing_the_key_ends_its_sessions(signer):
    token = signer.issue(NURSE, now=1000.0)
    assert signer.verify(token, lookup_of(), now=1001.0) is None  # revoked: no entry of that name
    renewed = ApiKeyEntry(name="ward-7", role="clinician", sha256=hash_api_key("tik_two"), created=NURSE.created)
    assert signer.verify(token, lookup_of(renewed), now=1001.0) is None  # same name, new key


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # the signature
        lambda t: ".".join([*t.split(".")[:2], str(int(t.split(".")[2]) + 86400), t.split(".")[3]]),  # extended
        lambda t: "v2" + t[2:],
        lambda t: t.split(".", 1)[1],
        lambda t: "",
        lambda t: "v1.!!!.1.x",
    ],
)
def test_a_tampered_cookie_is_refused(signer, tamper):
    assert signer.verify(tamper(signer.issue(NURSE, now=1000.0)), lookup_of(NURSE), now=1001.0) is None


def test_another_servers_secret_does_not_verify(signer, tmp_path):
    other = SessionSigner(load_or_create_secret(tmp_path / "other.key"), lifetime_s=3600)
    assert other.verify(signer.issue(NURSE, now=1000.0), lookup_of(NURSE), now=1001.0) is None


def test_the_secret_is_created_once_owner_only_and_shared(tmp_path):
    path = tmp_path / "keys" / "page_session.key"
    found = []
    threads = [threading.Thread(target=lambda: found.append(load_or_create_secret(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found[0]) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == found[0]
    assert [p.name for p in path.parent.iterdir()] == ["page_session.key"]  # no temporary left behind


def test_cookie_attributes_and_parsing():
    value = session_cookie("v1.abc.123.def", max_age_s=600, secure=False)
    assert value.startswith(f"{COOKIE_NAME}=v1.abc.123.def;")
    assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=600"} <= set(value.split("; "))
    assert "Secure" not in value and "Secure" in session_cookie("x", max_age_s=1, secure=True)
    headers = [(b"cookie", f"other=1; {COOKIE_NAME}=v1.abc.123.def; more=2".encode())]
    assert cookie_token(headers) == "v1.abc.123.def"
    assert cookie_token([(b"cookie", b"other=1")]) is None
    assert came_over_https({"scheme": "https", "headers": []})
    assert came_over_https({"scheme": "http", "headers": [(b"x-forwarded-proto", b"https")]})
    assert not came_over_https({"scheme": "http", "headers": []})
