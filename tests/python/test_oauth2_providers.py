"""Contract 2: OAuth2 credential providers (and that client secrets never come back)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest

from lk_harness import Latchkey, assert_deleted, capture_raw_bodies, further_server, oauth2_provider_arn, raises_code, uniq
from oidc import OidcProvider

GITHUB_AUTHORIZE = "https://github.com/login/oauth/authorize"
GITHUB_TOKEN = "https://github.com/login/oauth/access_token"


def new_secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def watched(server: Latchkey) -> tuple[Any, list[bytes]]:
    """An admin control-plane client whose raw response bodies are all kept."""
    client = server.cp()
    return client, capture_raw_bodies(client)


def assert_absent(secret: str, bodies: list[bytes], *responses: Any) -> None:
    blob = b"\n".join(bodies)
    assert secret.encode() not in blob, "a client secret came back in a response body"
    for r in responses:
        assert secret not in json.dumps(r, default=str), "a client secret came back in a parsed response"


def test_github_create_and_get(server: Latchkey, watched) -> None:
    cp, bodies = watched
    name = uniq("gh")
    secret = new_secret()
    server.remember_secret(secret)
    created = cp.create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "gh-client-1", "clientSecret": secret}},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["name"] == name
    assert created["credentialProviderArn"] == oauth2_provider_arn(name)
    assert created["credentialProviderArn"] == (
        f"arn:aws:bedrock-agentcore:us-east-1:000000000000:token-vault/default/oauth2credentialprovider/{name}"
    )
    prefix = f"{server.url}/identities/oauth2/callback/"
    assert created["callbackUrl"].startswith(prefix), created["callbackUrl"]
    assert len(created["callbackUrl"]) > len(prefix)
    assert isinstance(created["clientSecretArn"]["secretArn"], str) and created["clientSecretArn"]["secretArn"]

    got = cp.get_oauth2_credential_provider(name=name)
    assert got["name"] == name
    assert got["credentialProviderVendor"] == "GithubOauth2"
    assert got["credentialProviderArn"] == oauth2_provider_arn(name)
    assert got["callbackUrl"] == created["callbackUrl"]
    assert isinstance(got["createdTime"], dt.datetime)
    assert isinstance(got["lastUpdatedTime"], dt.datetime)
    out = got["oauth2ProviderConfigOutput"]
    assert list(out) == ["githubOauth2ProviderConfig"], out
    gh = out["githubOauth2ProviderConfig"]
    assert gh["clientId"] == "gh-client-1"
    meta = gh["oauthDiscovery"]["authorizationServerMetadata"]
    assert meta["authorizationEndpoint"] == GITHUB_AUTHORIZE
    assert meta["tokenEndpoint"] == GITHUB_TOKEN
    assert_absent(secret, bodies, created, got)


def test_callback_urls_are_distinct(server: Latchkey, watched) -> None:
    cp, bodies = watched
    urls = set()
    for _ in range(2):
        secret = new_secret()
        server.remember_secret(secret)
        r = cp.create_oauth2_credential_provider(
            name=uniq("gh-cb"),
            credentialProviderVendor="GithubOauth2",
            oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": secret}},
        )
        assert r["callbackUrl"].startswith(f"{server.url}/identities/oauth2/callback/")
        urls.add(r["callbackUrl"])
        assert_absent(secret, bodies, r)
    assert len(urls) == 2


def test_custom_by_discovery_url(server: Latchkey, watched, oidc: OidcProvider) -> None:
    cp, bodies = watched
    name = uniq("custom-disc")
    secret = new_secret()
    server.remember_secret(secret)
    created = cp.create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": oidc.discovery_url},
                "clientId": oidc.client_id,
                "clientSecret": secret,
            }
        },
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["callbackUrl"].startswith(f"{server.url}/identities/oauth2/callback/")
    got = cp.get_oauth2_credential_provider(name=name)
    assert got["credentialProviderVendor"] == "CustomOauth2"
    custom = got["oauth2ProviderConfigOutput"]["customOauth2ProviderConfig"]
    assert custom["clientId"] == oidc.client_id
    meta = custom["oauthDiscovery"]["authorizationServerMetadata"]
    assert meta["issuer"] == oidc.issuer
    assert meta["authorizationEndpoint"] == oidc.metadata["authorization_endpoint"]
    assert meta["tokenEndpoint"] == oidc.metadata["token_endpoint"]
    assert_absent(secret, bodies, created, got)


def test_custom_by_explicit_metadata(server: Latchkey, watched) -> None:
    cp, bodies = watched
    name = uniq("custom-meta")
    secret = new_secret()
    server.remember_secret(secret)
    metadata = {
        "issuer": "https://idp.example.test",
        "authorizationEndpoint": "https://idp.example.test/oauth2/authorize",
        "tokenEndpoint": "https://idp.example.test/oauth2/token",
        "responseTypes": ["code"],
        "tokenEndpointAuthMethods": ["client_secret_post"],
    }
    created = cp.create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"authorizationServerMetadata": metadata},
                "clientId": "explicit-client",
                "clientSecret": secret,
            }
        },
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    got = cp.get_oauth2_credential_provider(name=name)
    custom = got["oauth2ProviderConfigOutput"]["customOauth2ProviderConfig"]
    assert custom["clientId"] == "explicit-client"
    meta = custom["oauthDiscovery"]["authorizationServerMetadata"]
    for key in ("issuer", "authorizationEndpoint", "tokenEndpoint"):
        assert meta[key] == metadata[key], (key, meta)
    assert meta.get("responseTypes", ["code"]) == ["code"]
    assert meta.get("tokenEndpointAuthMethods") == ["client_secret_post"]
    assert_absent(secret, bodies, created, got)


def test_microsoft_with_tenant(server: Latchkey, watched) -> None:
    cp, bodies = watched
    name = uniq("ms")
    tenant = str(uuid.uuid4())
    secret = new_secret()
    server.remember_secret(secret)
    created = cp.create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="MicrosoftOauth2",
        oauth2ProviderConfigInput={
            "microsoftOauth2ProviderConfig": {"clientId": "ms-client", "clientSecret": secret, "tenantId": tenant}
        },
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    got = cp.get_oauth2_credential_provider(name=name)
    assert got["credentialProviderVendor"] == "MicrosoftOauth2"
    ms = got["oauth2ProviderConfigOutput"]["microsoftOauth2ProviderConfig"]
    assert ms["clientId"] == "ms-client"
    meta = ms["oauthDiscovery"]["authorizationServerMetadata"]
    assert "login.microsoftonline.com" in meta["authorizationEndpoint"]
    assert tenant in meta["authorizationEndpoint"], meta
    assert tenant in meta["tokenEndpoint"], meta
    assert_absent(secret, bodies, created, got)


def test_list_update_delete(server: Latchkey, watched) -> None:
    cp, bodies = watched
    prefix = uniq("lst")
    names = [f"{prefix}-{i}" for i in range(3)]
    secrets = [new_secret() for _ in names]
    server.remember_secret(*secrets)
    created = {}
    for n, s in zip(names, secrets):
        created[n] = cp.create_oauth2_credential_provider(
            name=n,
            credentialProviderVendor="GithubOauth2",
            oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": f"id-{n}", "clientSecret": s}},
        )

    seen: list[str] = []
    token = None
    responses = []
    while True:
        kwargs: dict[str, Any] = {"maxResults": 2}
        if token:
            kwargs["nextToken"] = token
        page = cp.list_oauth2_credential_providers(**kwargs)
        responses.append(page)
        assert len(page["credentialProviders"]) <= 2
        for item in page["credentialProviders"]:
            seen.append(item["name"])
            if item["name"] in names:
                assert item["credentialProviderVendor"] == "GithubOauth2"
                assert item["credentialProviderArn"] == oauth2_provider_arn(item["name"])
                assert isinstance(item["createdTime"], dt.datetime)
                assert isinstance(item["lastUpdatedTime"], dt.datetime)
        token = page.get("nextToken")
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert set(names) <= set(seen)

    target = names[0]
    before = cp.get_oauth2_credential_provider(name=target)
    time.sleep(1.1)
    new = new_secret()
    server.remember_secret(new)
    updated = cp.update_oauth2_credential_provider(
        name=target,
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "id-rotated", "clientSecret": new}},
    )
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert updated["name"] == target
    assert updated["credentialProviderVendor"] == "GithubOauth2"
    assert updated["callbackUrl"] == created[target]["callbackUrl"], "the callback URL must survive an update"
    assert updated["oauth2ProviderConfigOutput"]["githubOauth2ProviderConfig"]["clientId"] == "id-rotated"
    assert updated["lastUpdatedTime"] > before["lastUpdatedTime"]
    assert updated["createdTime"] == before["createdTime"]
    after = cp.get_oauth2_credential_provider(name=target)
    assert after["oauth2ProviderConfigOutput"]["githubOauth2ProviderConfig"]["clientId"] == "id-rotated"

    assert_deleted(
        lambda: cp.delete_oauth2_credential_provider(name=target),
        get=lambda: cp.get_oauth2_credential_provider(name=target),
        delete_again=lambda: cp.delete_oauth2_credential_provider(name=target),
        update=lambda: cp.update_oauth2_credential_provider(
            name=target,
            credentialProviderVendor="GithubOauth2",
            oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "x", "clientSecret": new}},
        ),
    )
    for s in [*secrets, new]:
        assert_absent(s, bodies, before, updated, after, *responses)


@pytest.mark.parametrize(
    "vendor,config",
    [
        ("GoogleOauth2", {"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "mismatch-secret-1"}}),
        ("GithubOauth2", {"microsoftOauth2ProviderConfig": {"clientId": "c", "clientSecret": "mismatch-secret-2", "tenantId": "t"}}),
        ("CustomOauth2", {"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "mismatch-secret-3"}}),
        (
            "GithubOauth2",
            {
                "customOauth2ProviderConfig": {
                    "oauthDiscovery": {"discoveryUrl": "https://idp.example.test/.well-known/openid-configuration"},
                    "clientId": "c",
                    "clientSecret": "mismatch-secret-4",
                }
            },
        ),
    ],
)
def test_vendor_config_mismatch(server: Latchkey, cp, vendor: str, config: dict) -> None:
    for variant in config.values():
        server.remember_secret(variant["clientSecret"])
    name = uniq("mismatch")
    with raises_code("ValidationException"):
        cp.create_oauth2_credential_provider(name=name, credentialProviderVendor=vendor, oauth2ProviderConfigInput=config)
    with raises_code("ResourceNotFoundException"):
        cp.get_oauth2_credential_provider(name=name)


def test_unknown_vendor_rejected(cp) -> None:
    name = uniq("badvendor")
    with raises_code("ValidationException"):
        cp.create_oauth2_credential_provider(
            name=name,
            credentialProviderVendor="NoSuchVendorOauth2",
            oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "x"}},
        )


def test_invalid_provider_name(cp) -> None:
    with raises_code("ValidationException"):
        cp.create_oauth2_credential_provider(
            name="bad name!",
            credentialProviderVendor="GithubOauth2",
            oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "x"}},
        )


def test_duplicate_provider_conflicts(server: Latchkey, cp) -> None:
    name = uniq("gh-dup")
    cfg = {"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "dup-secret-value"}}
    server.remember_secret("dup-secret-value")
    cp.create_oauth2_credential_provider(name=name, credentialProviderVendor="GithubOauth2", oauth2ProviderConfigInput=cfg)
    with raises_code("ConflictException"):
        cp.create_oauth2_credential_provider(name=name, credentialProviderVendor="GithubOauth2", oauth2ProviderConfigInput=cfg)


def test_bad_discovery_url_pattern(cp) -> None:
    with raises_code("ValidationException"):
        cp.create_oauth2_credential_provider(
            name=uniq("baddisc"),
            credentialProviderVendor="CustomOauth2",
            oauth2ProviderConfigInput={
                "customOauth2ProviderConfig": {
                    "oauthDiscovery": {"discoveryUrl": "https://idp.example.test/not-a-discovery-document"},
                    "clientId": "c",
                    "clientSecret": "x",
                }
            },
        )


# --------------------------------------------------------------- the outbound policy, up front
PUBLIC_AUTHORIZE = "https://93.184.215.14/authorize"
PUBLIC_TOKEN = "https://93.184.215.14/token"
METADATA = "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.authorizationServerMetadata"


@pytest.fixture(scope="module")
def strict_server(latchkey_data_dir: Any, db_url: str | None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server of the same installation with the private-address opt-in off, as in production."""
    yield from further_server(latchkey_data_dir, tmp_path_factory.mktemp("strict-outbound"), db_url, {"LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES": "false"})


def custom_metadata(authorize: str, token: str) -> dict[str, Any]:
    return {
        "customOauth2ProviderConfig": {
            "oauthDiscovery": {
                "authorizationServerMetadata": {
                    "issuer": "https://idp.example.com", "authorizationEndpoint": authorize, "tokenEndpoint": token, "responseTypes": ["code"],
                }
            },
            "clientId": "c",
            "clientSecret": "strict-secret-value",
        }
    }


def test_endpoints_the_outbound_policy_refuses_are_refused_at_create_and_update(strict_server: Latchkey, oidc: OidcProvider) -> None:
    """Issue 14: a provider whose endpoints the outbound policy would refuse when a flow calls
    them (plain http, a private or loopback address, literal or resolved) is refused when it
    is created or updated, naming the field and the setting, instead of failing with a
    502/503 after a user has consented. Nothing is stored or changed."""
    strict_server.remember_secret("strict-secret-value")
    cp = strict_server.cp()
    discovery = {
        "customOauth2ProviderConfig": {
            "oauthDiscovery": {"discoveryUrl": oidc.issuer + "/.well-known/openid-configuration"},
            "clientId": "c",
            "clientSecret": "strict-secret-value",
        }
    }
    cases = [
        (custom_metadata(PUBLIC_AUTHORIZE, "https://10.0.0.5/token"), f"{METADATA}.tokenEndpoint", "10.0.0.5 is not public (private address)"),
        (custom_metadata("https://localhost:8443/authorize", PUBLIC_TOKEN), f"{METADATA}.authorizationEndpoint", "localhost is not public (loopback address)"),
        (custom_metadata(PUBLIC_AUTHORIZE, "http://127.0.0.1:9/token"), f"{METADATA}.tokenEndpoint", "plain http (to 127.0.0.1)"),
        (discovery, "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.discoveryUrl", "plain http (to 127.0.0.1)"),
    ]
    for config, field, why in cases:
        name = uniq("strict")
        with raises_code("ValidationException") as refused:
            cp.create_oauth2_credential_provider(name=name, credentialProviderVendor="CustomOauth2", oauth2ProviderConfigInput=config)
        message = refused.value.response["Error"]["Message"]
        for needle in (field, why, "LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "--outbound-allow-private-addresses"):
            assert needle in message, (needle, message)
        with raises_code("ResourceNotFoundException"):
            cp.get_oauth2_credential_provider(name=name)

    name = uniq("strict-public")
    cp.create_oauth2_credential_provider(name=name, credentialProviderVendor="CustomOauth2", oauth2ProviderConfigInput=custom_metadata(PUBLIC_AUTHORIZE, PUBLIC_TOKEN))
    with raises_code("ValidationException") as refused:
        cp.update_oauth2_credential_provider(
            name=name, credentialProviderVendor="CustomOauth2", oauth2ProviderConfigInput=custom_metadata(PUBLIC_AUTHORIZE, "https://192.168.1.10/token")
        )
    assert f"{METADATA}.tokenEndpoint" in refused.value.response["Error"]["Message"]
    got = cp.get_oauth2_credential_provider(name=name)["oauth2ProviderConfigOutput"]["customOauth2ProviderConfig"]
    assert got["oauthDiscovery"]["authorizationServerMetadata"]["tokenEndpoint"] == PUBLIC_TOKEN
