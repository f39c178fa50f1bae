"""Contract 6: workload access tokens (plain, ForUserId, ForJWT with a real IdP) and API keys."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Iterator

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from lk_harness import (
    Latchkey,
    decode_wat,
    eventually,
    inbound_issuers_toml,
    new_api_key_provider,
    new_workload,
    raises_code,
    uniq,
)
from oidc import OidcProvider, running_provider

DENIED = ("AccessDeniedException", "ValidationException")


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """This module's own provider: it rotates its keys."""
    yield from running_provider(tmp_path_factory, "idp-dataplane")


@pytest.fixture(scope="module")
def server_config(idp: OidcProvider) -> str:
    return inbound_issuers_toml(idp.issuer)


@pytest.fixture(scope="module")
def workload(cp) -> str:
    return new_workload(cp, "dp-wl")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# --------------------------------------------------------------------------- WATs
def test_jwks_is_public_and_has_no_private_parts(server: Latchkey) -> None:
    r = requests.get(f"{server.url}/.well-known/jwks.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/")
    keys = r.json()["keys"]
    assert keys
    for k in keys:
        assert k.get("kid")
        assert k["kty"] in ("EC", "OKP")
        assert "d" not in k


def test_plain_wat(server: Latchkey, dp, workload: str) -> None:
    out = dp.get_workload_access_token(workloadName=workload)
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    token = out["workloadAccessToken"]
    assert len(token.split(".")) == 3
    claims = decode_wat(server, token)
    assert claims["iss"] == server.url
    assert claims["aud"] == server.url
    assert claims["sub"] == workload
    assert claims["exp"] - claims["iat"] == 900
    assert claims.get("jti")
    assert "latchkey:user" not in claims


def test_wats_are_unique(server: Latchkey, dp, workload: str) -> None:
    a = decode_wat(server, dp.get_workload_access_token(workloadName=workload)["workloadAccessToken"])
    b = decode_wat(server, dp.get_workload_access_token(workloadName=workload)["workloadAccessToken"])
    assert a["jti"] != b["jti"]


def test_wat_for_user_id(server: Latchkey, dp, workload: str) -> None:
    token = dp.get_workload_access_token_for_user_id(workloadName=workload, userId="user-123")["workloadAccessToken"]
    claims = decode_wat(server, token)
    assert claims["sub"] == workload
    assert claims["latchkey:user"] == "user-123"
    assert claims["exp"] - claims["iat"] == 900


def test_wat_for_jwt_with_real_id_token(server: Latchkey, dp, workload: str, idp: OidcProvider) -> None:
    id_token = idp.id_token_for("alice")
    server.remember_secret(id_token)
    out = dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=id_token)
    claims = decode_wat(server, out["workloadAccessToken"])
    assert claims["sub"] == workload
    assert claims["latchkey:user"] == "alice"


def test_wat_for_jwt_tampered_signature(server: Latchkey, dp, workload: str, idp: OidcProvider) -> None:
    id_token = idp.id_token_for("alice")
    header, payload, sig = id_token.split(".")
    raw = bytearray(b64u_decode(sig))
    raw[len(raw) // 2] ^= 0x01
    bad_sig = f"{header}.{payload}.{b64u(bytes(raw))}"
    with raises_code(*DENIED):
        dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=bad_sig)


def test_wat_for_jwt_tampered_payload(server: Latchkey, dp, workload: str, idp: OidcProvider) -> None:
    id_token = idp.id_token_for("alice")
    header, payload, sig = id_token.split(".")
    claims = json.loads(b64u_decode(payload))
    claims["sub"] = "mallory"
    forged = f"{header}.{b64u(json.dumps(claims).encode())}.{sig}"
    with raises_code(*DENIED):
        dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=forged)


def test_wat_for_jwt_alg_none(dp, workload: str, idp: OidcProvider) -> None:
    id_token = idp.id_token_for("alice")
    _h, payload, _s = id_token.split(".")
    unsigned = f"{b64u(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}.AA"
    with raises_code(*DENIED):
        dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=unsigned)


def test_wat_for_jwt_from_untrusted_issuer(dp, workload: str, oidc: OidcProvider) -> None:
    # `oidc` is the session's provider: a real, validly signed token from an issuer
    # this server was not configured to trust.
    foreign = oidc.id_token_for("alice")
    with raises_code(*DENIED):
        dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=foreign)


def test_wat_for_jwt_self_signed(dp, workload: str, idp: OidcProvider) -> None:
    # Right issuer and audience, but signed by an attacker's key under a known kid.
    real = idp.id_token_for("alice")
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode({**claims, "sub": "mallory"}, attacker, algorithm="ES256", headers={"kid": kid})
    with raises_code(*DENIED):
        dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=forged)


def test_unknown_workload(dp, idp: OidcProvider) -> None:
    missing = uniq("no-such-wl")
    with raises_code("ResourceNotFoundException"):
        dp.get_workload_access_token(workloadName=missing)
    with raises_code("ResourceNotFoundException"):
        dp.get_workload_access_token_for_user_id(workloadName=missing, userId="alice")
    with raises_code("ResourceNotFoundException"):
        dp.get_workload_access_token_for_jwt(workloadName=missing, userToken=idp.id_token_for("alice"))


def test_invalid_workload_name(dp, workload: str) -> None:
    with raises_code("ValidationException"):
        dp.get_workload_access_token(workloadName="bad name!")
    with raises_code("ValidationException"):
        dp.get_workload_access_token_for_user_id(workloadName=workload, userId="u" * 129)


# --------------------------------------------------------------------------- API keys
@pytest.fixture(scope="module")
def api_key_provider(server: Latchkey, cp) -> tuple[str, str]:
    return new_api_key_provider(server, cp, "dp-ak", "sk-live")


def test_get_resource_api_key(server: Latchkey, dp, cp, workload: str, api_key_provider: tuple[str, str]) -> None:
    name, key = api_key_provider
    wat = dp.get_workload_access_token(workloadName=workload)["workloadAccessToken"]
    server.remember_secret(wat)
    out = dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=name)
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert out["apiKey"] == key

    user_wat = dp.get_workload_access_token_for_user_id(workloadName=workload, userId="bob")["workloadAccessToken"]
    assert dp.get_resource_api_key(workloadIdentityToken=user_wat, resourceCredentialProviderName=name)["apiKey"] == key

    # An updated key is served from then on.
    new = f"sk-live-{uuid.uuid4().hex}"
    server.remember_secret(new)
    cp.update_api_key_credential_provider(name=name, apiKey=new)
    assert dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=name)["apiKey"] == new


def test_get_resource_api_key_garbage_wat(dp, api_key_provider: tuple[str, str]) -> None:
    name, _ = api_key_provider
    with raises_code("AccessDeniedException"):
        dp.get_resource_api_key(workloadIdentityToken="garbage", resourceCredentialProviderName=name)
    with raises_code("AccessDeniedException"):
        dp.get_resource_api_key(workloadIdentityToken="a.b.c", resourceCredentialProviderName=name)


def test_get_resource_api_key_forged_wat(server: Latchkey, dp, workload: str, api_key_provider: tuple[str, str]) -> None:
    name, _ = api_key_provider
    real = dp.get_workload_access_token(workloadName=workload)["workloadAccessToken"]
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": kid})
    with raises_code("AccessDeniedException"):
        dp.get_resource_api_key(workloadIdentityToken=forged, resourceCredentialProviderName=name)
    _h, payload, _s = real.split(".")
    unsigned = f"{b64u(json.dumps({'alg': 'none', 'kid': kid}).encode())}.{payload}."
    with raises_code("AccessDeniedException"):
        dp.get_resource_api_key(workloadIdentityToken=unsigned, resourceCredentialProviderName=name)


def test_get_resource_api_key_deleted_workload(dp, cp, api_key_provider: tuple[str, str]) -> None:
    name, _ = api_key_provider
    doomed = uniq("dp-doomed")
    cp.create_workload_identity(name=doomed)
    wat = dp.get_workload_access_token(workloadName=doomed)["workloadAccessToken"]
    assert dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=name)["apiKey"]
    cp.delete_workload_identity(name=doomed)

    def rejected() -> None:
        with raises_code("AccessDeniedException", "ResourceNotFoundException"):
            dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=name)

    eventually(rejected)  # immediate on this replica; other replicas within their cache TTL


def test_get_resource_api_key_unknown_provider(dp, workload: str) -> None:
    wat = dp.get_workload_access_token(workloadName=workload)["workloadAccessToken"]
    with raises_code("ResourceNotFoundException"):
        dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=uniq("nope"))


# --------------------------------------------------------------------------- rotation (last)
def test_wat_for_jwt_after_idp_key_rotation(server: Latchkey, dp, workload: str, idp: OidcProvider) -> None:
    before = idp.id_token_for("bob")
    assert decode_wat(server, dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=before)["workloadAccessToken"])[
        "latchkey:user"
    ] == "bob"
    old_kid = jwt.get_unverified_header(before)["kid"]

    idp.rotate_keys()
    after = idp.id_token_for("bob")
    assert jwt.get_unverified_header(after)["kid"] != old_kid
    # The server may rate-limit kid-driven JWKS refetches (tens of seconds per issuer,
    # so forged kids cannot make it hammer the IdP); a rotated key must be picked up
    # within that window.
    out = eventually(
        lambda: dp.get_workload_access_token_for_jwt(workloadName=workload, userToken=after),
        timeout=45.0,
        interval=1.0,
    )
    claims = decode_wat(server, out["workloadAccessToken"])
    assert claims["latchkey:user"] == "bob"
    assert claims["sub"] == workload
