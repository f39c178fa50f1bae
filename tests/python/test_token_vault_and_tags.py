"""Contracts 4 and 5: the token vault settings and resource tags."""

from __future__ import annotations

import datetime as dt

from lk_harness import api_key_provider_arn, oauth2_provider_arn, raises_code, uniq, workload_arn


# --------------------------------------------------------------------------- token vault
def test_get_token_vault(cp) -> None:
    vault = cp.get_token_vault()
    assert vault["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert vault["tokenVaultId"] == "default"
    assert vault["kmsConfiguration"]["keyType"] == "ServiceManagedKey"
    assert isinstance(vault["lastModifiedDate"], dt.datetime)
    explicit = cp.get_token_vault(tokenVaultId="default")
    assert explicit["tokenVaultId"] == "default"


def test_set_token_vault_service_managed(cp) -> None:
    out = cp.set_token_vault_cmk(kmsConfiguration={"keyType": "ServiceManagedKey"})
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert out["tokenVaultId"] == "default"
    assert out["kmsConfiguration"]["keyType"] == "ServiceManagedKey"
    assert isinstance(out["lastModifiedDate"], dt.datetime)
    assert cp.get_token_vault()["kmsConfiguration"]["keyType"] == "ServiceManagedKey"


def test_customer_managed_key_needs_arn(cp) -> None:
    with raises_code("ValidationException"):
        cp.set_token_vault_cmk(kmsConfiguration={"keyType": "CustomerManagedKey"})
    # Nothing changed.
    assert cp.get_token_vault()["kmsConfiguration"]["keyType"] == "ServiceManagedKey"


def test_customer_managed_key_needs_the_kms_provider(cp) -> None:
    """With the key file, no KMS key wraps the keys: a customer managed key is refused,
    naming the setting that enables it, and ResetTokenVaultKeyMaterial has nothing to do."""
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    with raises_code("ValidationException") as e:
        cp.set_token_vault_cmk(kmsConfiguration={"keyType": "CustomerManagedKey", "kmsKeyArn": arn})
    assert "aws-kms" in str(e.value)
    with raises_code("ValidationException"):
        cp.reset_token_vault_key_material(tokenVaultId="default")
    assert cp.get_token_vault()["kmsConfiguration"]["keyType"] == "ServiceManagedKey"


def test_unknown_key_type(cp) -> None:
    with raises_code("ValidationException"):
        cp.set_token_vault_cmk(kmsConfiguration={"keyType": "SomethingElse"})


# --------------------------------------------------------------------------- tags
def test_tag_list_untag_workload(cp) -> None:
    name = uniq("tagged")
    arn = cp.create_workload_identity(name=name)["workloadIdentityArn"]
    assert arn == workload_arn(name)
    assert cp.list_tags_for_resource(resourceArn=arn).get("tags", {}) == {}

    r = cp.tag_resource(resourceArn=arn, tags={"team": "identity", "env": "test", "latchkey:note": "a b/c=d"})
    assert r["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == {
        "team": "identity",
        "env": "test",
        "latchkey:note": "a b/c=d",
    }

    cp.tag_resource(resourceArn=arn, tags={"env": "prod"})  # overwrite one value
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"]["env"] == "prod"

    r = cp.untag_resource(resourceArn=arn, tagKeys=["team", "latchkey:note"])
    assert r["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "prod"}


def test_tags_given_at_create(server, cp) -> None:
    name = uniq("tagcreate")
    arn = cp.create_workload_identity(name=name, tags={"owner": "alice", "cost-center": "42"})["workloadIdentityArn"]
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == {"owner": "alice", "cost-center": "42"}

    pname = uniq("tagprov")
    server.remember_secret("tag-provider-secret-value")
    parn = cp.create_oauth2_credential_provider(
        name=pname,
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "tag-provider-secret-value"}},
        tags={"kind": "oauth"},
    )["credentialProviderArn"]
    assert parn == oauth2_provider_arn(pname)
    assert cp.list_tags_for_resource(resourceArn=parn)["tags"] == {"kind": "oauth"}

    aname = uniq("tagapikey")
    server.remember_secret("tag-api-key-value-0123456789")
    aarn = cp.create_api_key_credential_provider(name=aname, apiKey="tag-api-key-value-0123456789", tags={"kind": "apikey"})[
        "credentialProviderArn"
    ]
    assert aarn == api_key_provider_arn(aname)
    assert cp.list_tags_for_resource(resourceArn=aarn)["tags"] == {"kind": "apikey"}
    cp.tag_resource(resourceArn=aarn, tags={"more": "yes"})
    assert cp.list_tags_for_resource(resourceArn=aarn)["tags"] == {"kind": "apikey", "more": "yes"}


def test_tags_unknown_arn(cp) -> None:
    missing = workload_arn(uniq("nope"))
    with raises_code("ResourceNotFoundException"):
        cp.tag_resource(resourceArn=missing, tags={"a": "b"})
    with raises_code("ResourceNotFoundException"):
        cp.list_tags_for_resource(resourceArn=missing)
    with raises_code("ResourceNotFoundException"):
        cp.untag_resource(resourceArn=missing, tagKeys=["a"])


def test_tags_removed_with_resource(cp) -> None:
    name = uniq("tagdel")
    arn = cp.create_workload_identity(name=name, tags={"x": "1"})["workloadIdentityArn"]
    cp.delete_workload_identity(name=name)
    with raises_code("ResourceNotFoundException"):
        cp.list_tags_for_resource(resourceArn=arn)
    # Re-creating the same name starts with no stale tags.
    cp.create_workload_identity(name=name)
    assert cp.list_tags_for_resource(resourceArn=arn).get("tags", {}) == {}


def test_invalid_tag_key(cp) -> None:
    arn = cp.create_workload_identity(name=uniq("badtag"))["workloadIdentityArn"]
    with raises_code("ValidationException"):
        cp.tag_resource(resourceArn=arn, tags={"bad#key": "v"})
    with raises_code("ValidationException"):
        cp.tag_resource(resourceArn=arn, tags={"k" * 129: "v"})
    assert cp.list_tags_for_resource(resourceArn=arn).get("tags", {}) == {}
