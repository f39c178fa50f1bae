"""Contract 7: credential roles (admin, workload:<name>, binding) and revocation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from botocore.exceptions import ClientError

from lk_harness import (
    Cred,
    Latchkey,
    error_code,
    eventually,
    http_status,
    new_api_key_provider,
    raises_code,
    uniq,
    workload_arn,
)


@pytest.fixture(scope="module")
def names(cp) -> dict[str, str]:
    a, b = uniq("wl-a"), uniq("wl-b")
    cp.create_workload_identity(name=a)
    cp.create_workload_identity(name=b)
    return {"a": a, "b": b}


@pytest.fixture(scope="module")
def wl_a(server: Latchkey, names: dict[str, str]) -> Cred:
    return server.create_credential(f"workload:{names['a']}")


@pytest.fixture(scope="module")
def binding(server: Latchkey) -> Cred:
    return server.create_credential("binding")


@pytest.fixture(scope="module")
def api_key(server: Latchkey, cp) -> tuple[str, str]:
    return new_api_key_provider(server, cp, "roles-ak", "roles-key")


# --------------------------------------------------------------------------- CLI
def test_credentials_list_shape(server: Latchkey, wl_a: Cred, binding: Cred) -> None:
    listed = server.list_credentials()
    by_id = {c["accessKeyId"]: c for c in listed}
    for cred in (server.admin, wl_a, binding):
        assert cred is not None
        entry = by_id[cred.access_key_id]
        assert entry["role"] == cred.role
        assert entry.get("createdTime")
        assert entry.get("revoked") in (False, None, 0)
    text = repr(listed)
    for cred in (server.admin, wl_a, binding):
        assert cred.secret_access_key not in text, "credentials list shows a secret"
    assert len({server.admin.access_key_id, wl_a.access_key_id, binding.access_key_id}) == 3


def test_cli_rejects_bad_role(server: Latchkey) -> None:
    cp = server.cli("admin", "credentials", "create", "--role", "superuser", "--json", check=False)
    assert cp.returncode != 0


# --------------------------------------------------------------------------- workload role
def test_workload_credential_own_workload(server: Latchkey, wl_a: Cred, names: dict[str, str]) -> None:
    dp = server.dp(wl_a)
    token = dp.get_workload_access_token(workloadName=names["a"])["workloadAccessToken"]
    assert token.count(".") == 2


def test_workload_credential_other_workload(server: Latchkey, wl_a: Cred, names: dict[str, str]) -> None:
    dp = server.dp(wl_a)
    with raises_code("AccessDeniedException"):
        dp.get_workload_access_token(workloadName=names["b"])
    with raises_code("AccessDeniedException"):
        dp.get_workload_access_token_for_user_id(workloadName=names["b"], userId="alice")


def test_workload_credential_no_control_plane(server: Latchkey, wl_a: Cred, names: dict[str, str]) -> None:
    cp = server.cp(wl_a)
    with raises_code("AccessDeniedException"):
        cp.create_workload_identity(name=uniq("sneaky"))
    with raises_code("AccessDeniedException"):
        cp.list_oauth2_credential_providers()
    with raises_code("AccessDeniedException"):
        cp.list_workload_identities()
    with raises_code("AccessDeniedException"):
        cp.get_workload_identity(name=names["a"])
    with raises_code("AccessDeniedException"):
        cp.delete_workload_identity(name=names["a"])
    with raises_code("AccessDeniedException"):
        cp.get_token_vault()
    with raises_code("AccessDeniedException"):
        cp.tag_resource(resourceArn=workload_arn(names["a"]), tags={"latchkey:allow-user-id": "true"})
    with raises_code("AccessDeniedException"):
        cp.create_api_key_credential_provider(name=uniq("sneaky"), apiKey="x")
    # Still there, still untagged.
    admin_cp = server.cp()
    assert admin_cp.get_workload_identity(name=names["a"])["name"] == names["a"]
    assert "latchkey:allow-user-id" not in admin_cp.list_tags_for_resource(resourceArn=workload_arn(names["a"])).get("tags", {})


def test_workload_credential_reads_api_key_with_own_wat(
    server: Latchkey, wl_a: Cred, names: dict[str, str], api_key: tuple[str, str]
) -> None:
    dp = server.dp(wl_a)
    wat = dp.get_workload_access_token(workloadName=names["a"])["workloadAccessToken"]
    assert dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=api_key[0])["apiKey"] == api_key[1]


def test_for_user_id_needs_per_workload_opt_in(server: Latchkey, cp, names: dict[str, str]) -> None:
    name = uniq("wl-uid")
    cp.create_workload_identity(name=name)
    cred = server.create_credential(f"workload:{name}")
    dp = server.dp(cred)
    with raises_code("AccessDeniedException"):
        dp.get_workload_access_token_for_user_id(workloadName=name, userId="alice")

    # The tag takes only "true" or "false": anything else is refused, and changes nothing.
    with raises_code("ValidationException"):
        cp.tag_resource(resourceArn=workload_arn(name), tags={"latchkey:allow-user-id": "yes"})
    assert "latchkey:allow-user-id" not in cp.list_tags_for_resource(resourceArn=workload_arn(name))["tags"]
    cp.tag_resource(resourceArn=workload_arn(name), tags={"latchkey:allow-user-id": "false"})
    with raises_code("AccessDeniedException"):
        dp.get_workload_access_token_for_user_id(workloadName=name, userId="alice")

    cp.tag_resource(resourceArn=workload_arn(name), tags={"latchkey:allow-user-id": "true"})
    out = eventually(lambda: dp.get_workload_access_token_for_user_id(workloadName=name, userId="alice"))
    assert out["workloadAccessToken"].count(".") == 2

    # Turning it off again takes effect too.
    cp.untag_resource(resourceArn=workload_arn(name), tagKeys=["latchkey:allow-user-id"])

    def denied_again() -> None:
        with raises_code("AccessDeniedException"):
            dp.get_workload_access_token_for_user_id(workloadName=name, userId="alice")

    eventually(denied_again)

    # Admin is never restricted by the tag.
    assert server.dp().get_workload_access_token_for_user_id(workloadName=name, userId="alice")["workloadAccessToken"]


# --------------------------------------------------------------------------- binding role
def test_binding_credential_is_denied_everything_else(
    server: Latchkey, binding: Cred, names: dict[str, str], api_key: tuple[str, str]
) -> None:
    dp = server.dp(binding)
    cp = server.cp(binding)
    wat = server.dp().get_workload_access_token(workloadName=names["a"])["workloadAccessToken"]
    calls: list[tuple[str, Any]] = [
        ("get_workload_access_token", lambda: dp.get_workload_access_token(workloadName=names["a"])),
        ("for_user_id", lambda: dp.get_workload_access_token_for_user_id(workloadName=names["a"], userId="alice")),
        ("get_resource_api_key", lambda: dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=api_key[0])),
        (
            "get_resource_oauth2_token",
            lambda: dp.get_resource_oauth2_token(
                workloadIdentityToken=wat, resourceCredentialProviderName="p", scopes=[], oauth2Flow="M2M"
            ),
        ),
        ("create_workload_identity", lambda: cp.create_workload_identity(name=uniq("sneaky"))),
        ("list_workload_identities", lambda: cp.list_workload_identities()),
        ("list_oauth2_credential_providers", lambda: cp.list_oauth2_credential_providers()),
        ("get_token_vault", lambda: cp.get_token_vault()),
    ]
    outcomes = {}
    for label, call in calls:
        try:
            call()
            outcomes[label] = "succeeded"
        except ClientError as e:
            outcomes[label] = f"{error_code(e)}/{http_status(e)}"
    assert outcomes == {label: "AccessDeniedException/403" for label, _ in calls}


# --------------------------------------------------------------------------- revocation
def test_revoked_credential_is_unauthorized(server: Latchkey, cp, names: dict[str, str]) -> None:
    cred = server.create_credential(f"workload:{names['a']}")
    dp = server.dp(cred)
    assert dp.get_workload_access_token(workloadName=names["a"])["workloadAccessToken"]
    server.revoke_credential(cred.access_key_id)

    def unauthorized() -> None:
        with raises_code("UnauthorizedException"):
            dp.get_workload_access_token(workloadName=names["a"])

    eventually(unauthorized)
    entry = {c["accessKeyId"]: c for c in server.list_credentials()}[cred.access_key_id]
    assert entry.get("revoked"), entry

    revoked_admin = server.create_credential("admin")
    admin_cp = server.cp(revoked_admin)
    admin_cp.list_workload_identities(maxResults=1)
    server.revoke_credential(revoked_admin.access_key_id)

    def admin_unauthorized() -> None:
        with raises_code("UnauthorizedException"):
            admin_cp.list_workload_identities(maxResults=1)

    eventually(admin_unauthorized)
    # Other credentials are unaffected.
    assert cp.list_workload_identities(maxResults=1)

