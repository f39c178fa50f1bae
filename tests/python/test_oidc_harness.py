"""The oidc-provider harness itself (needs no Latchkey): real ID tokens, headlessly."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
import requests

from oidc import DEFAULT_CLIENT_ID, OidcProvider, pkce_pair


def verify_id_token(provider: OidcProvider, token: str) -> dict:
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256", header
    keys = [k for k in provider.jwks()["keys"] if k["kid"] == header["kid"]]
    assert len(keys) == 1, (header, provider.jwks())
    return jwt.decode(
        token,
        key=jwt.PyJWK(keys[0]).key,
        algorithms=["RS256"],
        audience=DEFAULT_CLIENT_ID,
        issuer=provider.issuer,
    )


def test_id_token_for_alice(oidc: OidcProvider) -> None:
    assert oidc.issuer.startswith("http://127.0.0.1:")
    assert oidc.metadata["issuer"] == oidc.issuer
    token = oidc.id_token_for("alice")
    claims = verify_id_token(oidc, token)
    assert claims["iss"] == oidc.issuer
    assert claims["aud"] == "latchkey-test"
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.test"
    assert claims["exp"] > claims["iat"]


def test_id_token_for_bob_is_bob(oidc: OidcProvider) -> None:
    claims = verify_id_token(oidc, oidc.id_token_for("bob"))
    assert claims["sub"] == "bob"


def test_full_token_response(oidc: OidcProvider) -> None:
    tokens = oidc.tokens_for("alice", scope="openid offline_access")
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["access_token"] and tokens["id_token"]
    assert tokens.get("refresh_token"), tokens.keys()
    r = oidc.token_request({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    assert r.json()["access_token"]


def test_pkce_is_required(oidc: OidcProvider) -> None:
    params = {
        "client_id": oidc.client_id,
        "response_type": "code",
        "redirect_uri": oidc.redirect_uris[0],
        "scope": "openid",
        "state": "s1",
    }
    r = requests.get(
        f"{oidc.metadata['authorization_endpoint']}?{urlencode(params)}", allow_redirects=False, timeout=10
    )
    assert r.status_code in (302, 303), r.text
    q = parse_qs(urlparse(r.headers["Location"]).query)
    assert q.get("error") == ["invalid_request"], q


def test_authorization_code_cannot_be_replayed(oidc: OidcProvider) -> None:
    code, verifier, redirect_uri = oidc.authorize("alice")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    assert oidc.token_request(form).status_code == 200
    again = oidc.token_request(form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text


def test_wrong_pkce_verifier_rejected(oidc: OidcProvider) -> None:
    code, _verifier, redirect_uri = oidc.authorize("alice")
    other, _ = pkce_pair()
    r = oidc.token_request(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": other}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_client_credentials(oidc: OidcProvider) -> None:
    r = oidc.token_request({"grant_type": "client_credentials", "scope": "api:read", "resource": "https://api.example.test"})
    assert r.status_code == 200, r.text
    body = r.json()
    at = body["access_token"]
    # Resource indicators: a JWT access token whose audience is the resource.
    claims = jwt.decode(at, options={"verify_signature": False})
    assert claims["aud"] == "https://api.example.test"
    assert jwt.get_unverified_header(at)["typ"] == "at+jwt"


def test_key_rotation_same_issuer_new_keys(tmp_path: Path) -> None:
    with OidcProvider(tmp_path) as provider:
        issuer, port = provider.issuer, provider.port
        old = provider.id_token_for("alice")
        old_kid = jwt.get_unverified_header(old)["kid"]
        provider.rotate_keys()
        assert (provider.issuer, provider.port) == (issuer, port)
        kids = {k["kid"] for k in provider.jwks()["keys"]}
        assert old_kid not in kids
        new = provider.id_token_for("alice")
        assert jwt.get_unverified_header(new)["kid"] in kids
        assert verify_id_token(provider, new)["sub"] == "alice"
