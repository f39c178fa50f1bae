"""Contract 12: after exercising everything on one server (at debug log level), none of
the secrets used appears in the server's log.

Every module's `server` fixture also checks its own log at teardown; this module drives
all secret-bearing paths at once, with verbose logging on.
"""

from __future__ import annotations

import uuid

import pytest
import requests
from botocore.exceptions import ClientError

from lk_harness import Latchkey, inbound_issuers_toml, signed_request, uniq, workload_arn
from oidc import OidcProvider


@pytest.fixture(scope="module")
def server_config(oidc: OidcProvider) -> str:
    return inbound_issuers_toml(oidc.issuer)


@pytest.fixture(scope="module")
def server_log_level() -> str:
    return "debug"


def test_no_secret_in_logs(server: Latchkey, cp, dp, oidc: OidcProvider) -> None:
    secrets: list[str] = []

    def secret(prefix: str) -> str:
        value = f"{prefix}-{uuid.uuid4().hex}"
        secrets.append(value)
        server.remember_secret(value)
        return value

    assert server.admin is not None
    secrets.append(server.admin.secret_access_key)

    # Credentials of every role, used over SigV4 and bearer.
    wl = uniq("sec-wl")
    cp.create_workload_identity(name=wl, allowedResourceOauth2ReturnUrls=["http://localhost:9090/cb"])
    wl_cred = server.create_credential(f"workload:{wl}")
    binding = server.create_credential("binding")
    secrets += [wl_cred.secret_access_key, binding.secret_access_key]
    server.dp(wl_cred).get_workload_access_token(workloadName=wl)
    with pytest.raises(ClientError):
        server.dp(binding).get_workload_access_token(workloadName=wl)
    for cred in (server.admin, wl_cred, binding):
        requests.post(
            server.url + "/identities/GetWorkloadAccessToken",
            headers={"Authorization": cred.bearer, "Content-Type": "application/json"},
            json={"workloadName": wl},
            timeout=10,
        )
    # A wrong bearer secret and a wrong SigV4 secret (the attempted secret must not be logged either).
    wrong = secret("wrong-bearer")
    requests.post(
        server.url + "/identities/GetWorkloadAccessToken",
        headers={"Authorization": f"Bearer {server.admin.access_key_id}:{wrong}", "Content-Type": "application/json"},
        json={"workloadName": wl},
        timeout=10,
    )
    signed_request(server.url, "POST", "/identities/GetWorkloadAccessToken", {"workloadName": wl}, server.admin.access_key_id, secret("wrong-sigv4"))

    # OAuth2 providers of each flavour, created and updated.
    gh = uniq("sec-gh")
    cp.create_oauth2_credential_provider(
        name=gh,
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "gh", "clientSecret": secret("gh-secret")}},
    )
    cp.update_oauth2_credential_provider(
        name=gh,
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "gh2", "clientSecret": secret("gh-secret2")}},
    )
    cp.create_oauth2_credential_provider(
        name=uniq("sec-custom"),
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": oidc.discovery_url},
                "clientId": oidc.client_id,
                "clientSecret": secret("custom-secret"),
            }
        },
    )
    cp.create_oauth2_credential_provider(
        name=uniq("sec-ms"),
        credentialProviderVendor="MicrosoftOauth2",
        oauth2ProviderConfigInput={
            "microsoftOauth2ProviderConfig": {"clientId": "ms", "clientSecret": secret("ms-secret"), "tenantId": "common"}
        },
    )
    # A rejected create carrying a secret.
    with pytest.raises(ClientError):
        cp.create_oauth2_credential_provider(
            name=uniq("sec-bad"),
            credentialProviderVendor="GoogleOauth2",
            oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "x", "clientSecret": secret("bad-secret")}},
        )
    cp.get_oauth2_credential_provider(name=gh)
    cp.list_oauth2_credential_providers()

    # API keys, created, updated, and fetched through the data plane.
    ak = uniq("sec-ak")
    cp.create_api_key_credential_provider(name=ak, apiKey=secret("api-key"))
    cp.update_api_key_credential_provider(name=ak, apiKey=secret("api-key2"))
    wat = dp.get_workload_access_token(workloadName=wl)["workloadAccessToken"]
    user_wat = dp.get_workload_access_token_for_user_id(workloadName=wl, userId="alice")["workloadAccessToken"]
    id_token = oidc.id_token_for("alice")
    jwt_wat = dp.get_workload_access_token_for_jwt(workloadName=wl, userToken=id_token)["workloadAccessToken"]
    assert dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=ak)["apiKey"] == secrets[-1]
    with pytest.raises(ClientError):
        dp.get_resource_api_key(workloadIdentityToken=wat + "x", resourceCredentialProviderName=ak)
    # Tokens are bearer credentials too.
    for token in (wat, user_wat, jwt_wat, id_token):
        secrets.append(token)
        server.remember_secret(token)
    cp.tag_resource(resourceArn=workload_arn(wl), tags={"k": "v"})

    # A revoked credential's use.
    doomed = server.create_credential("admin")
    secrets.append(doomed.secret_access_key)
    server.revoke_credential(doomed.access_key_id)
    try:
        server.cp(doomed).list_workload_identities()
    except ClientError:
        pass

    server.stop()  # flush everything
    log = server.log_text()
    assert log.strip(), "the server wrote no log at all"
    leaked = [s[:12] + "…" for s in secrets if s in log]
    assert not leaked, f"secrets found in the server log: {leaked}"
    assert not server.leaked_secrets()

