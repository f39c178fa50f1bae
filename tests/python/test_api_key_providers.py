"""Contract 3: API key credential providers; the key never comes back from the control plane."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

from lk_harness import Latchkey, api_key_provider_arn, assert_deleted, capture_raw_bodies, raises_code, uniq


def new_key() -> str:
    return f"apikey-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def test_api_key_provider_lifecycle(server: Latchkey) -> None:
    cp = server.cp()
    bodies = capture_raw_bodies(cp)
    name = uniq("ak")
    key = new_key()
    server.remember_secret(key)

    created = cp.create_api_key_credential_provider(name=name, apiKey=key)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["name"] == name
    assert created["credentialProviderArn"] == api_key_provider_arn(name)
    assert created["credentialProviderArn"] == (
        f"arn:aws:bedrock-agentcore:us-east-1:000000000000:token-vault/default/apikeycredentialprovider/{name}"
    )
    assert isinstance(created["apiKeySecretArn"]["secretArn"], str) and created["apiKeySecretArn"]["secretArn"]

    got = cp.get_api_key_credential_provider(name=name)
    assert got["name"] == name
    assert got["credentialProviderArn"] == api_key_provider_arn(name)
    assert isinstance(got["createdTime"], dt.datetime)
    assert isinstance(got["lastUpdatedTime"], dt.datetime)
    assert got["apiKeySecretArn"]["secretArn"] == created["apiKeySecretArn"]["secretArn"]

    time.sleep(1.1)
    new = new_key()
    server.remember_secret(new)
    updated = cp.update_api_key_credential_provider(name=name, apiKey=new)
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert updated["name"] == name
    assert updated["credentialProviderArn"] == api_key_provider_arn(name)
    assert updated["lastUpdatedTime"] > got["lastUpdatedTime"]
    assert updated["createdTime"] == got["createdTime"]

    listed = cp.list_api_key_credential_providers(maxResults=100)
    assert_deleted(
        lambda: cp.delete_api_key_credential_provider(name=name),
        get=lambda: cp.get_api_key_credential_provider(name=name),
        delete_again=lambda: cp.delete_api_key_credential_provider(name=name),
        update=lambda: cp.update_api_key_credential_provider(name=name, apiKey=new),
    )

    blob = b"\n".join(bodies)
    for k in (key, new):
        assert k.encode() not in blob, "an API key came back from the control plane"
        for r in (created, got, updated, listed):
            assert k not in json.dumps(r, default=str)


def test_list_up_to_100(server: Latchkey, cp) -> None:
    prefix = uniq("akl")
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        k = new_key()
        server.remember_secret(k)
        cp.create_api_key_credential_provider(name=n, apiKey=k)

    first = cp.list_api_key_credential_providers(maxResults=100)
    assert len(first["credentialProviders"]) <= 100

    seen: list[str] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"maxResults": 2}
        if token:
            kwargs["nextToken"] = token
        page = cp.list_api_key_credential_providers(**kwargs)
        assert len(page["credentialProviders"]) <= 2
        for item in page["credentialProviders"]:
            seen.append(item["name"])
            if item["name"] in names:
                assert item["credentialProviderArn"] == api_key_provider_arn(item["name"])
                assert isinstance(item["createdTime"], dt.datetime)
                assert isinstance(item["lastUpdatedTime"], dt.datetime)
        token = page.get("nextToken")
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert set(names) <= set(seen)

    with raises_code("ValidationException"):
        cp.list_api_key_credential_providers(maxResults=101)


def test_duplicate_api_key_provider(server: Latchkey, cp) -> None:
    name = uniq("akdup")
    k = new_key()
    server.remember_secret(k)
    cp.create_api_key_credential_provider(name=name, apiKey=k)
    with raises_code("ConflictException"):
        cp.create_api_key_credential_provider(name=name, apiKey=k)


def test_invalid_api_key_provider_name(cp) -> None:
    with raises_code("ValidationException"):
        cp.create_api_key_credential_provider(name="bad name!", apiKey="x")
    with raises_code("ValidationException"):
        cp.create_api_key_credential_provider(name="n" * 129, apiKey="x")
