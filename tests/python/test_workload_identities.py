"""Contract 1: workload identity lifecycle through boto3's control-plane client."""

from __future__ import annotations

import datetime as dt
import time

from lk_harness import assert_deleted, raises_code, uniq, workload_arn


def test_create_get_update_delete(cp) -> None:
    name = uniq("wl")
    urls = ["http://localhost:9090/cb", "https://app.example.test/oauth/return"]
    created = cp.create_workload_identity(name=name, allowedResourceOauth2ReturnUrls=urls)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["name"] == name
    assert created["workloadIdentityArn"] == workload_arn(name)
    assert created["workloadIdentityArn"] == (
        f"arn:aws:bedrock-agentcore:us-east-1:000000000000:workload-identity-directory/default/workload-identity/{name}"
    )
    assert created["allowedResourceOauth2ReturnUrls"] == urls

    got = cp.get_workload_identity(name=name)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["name"] == name
    assert got["workloadIdentityArn"] == workload_arn(name)
    assert got["allowedResourceOauth2ReturnUrls"] == urls
    assert isinstance(got["createdTime"], dt.datetime)
    assert isinstance(got["lastUpdatedTime"], dt.datetime)
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - got["createdTime"]).total_seconds()) < 120
    assert got["lastUpdatedTime"] >= got["createdTime"]

    time.sleep(1.1)  # timestamps may have second resolution
    new_urls = ["https://other.example.test/cb"]
    updated = cp.update_workload_identity(name=name, allowedResourceOauth2ReturnUrls=new_urls)
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert updated["name"] == name
    assert updated["workloadIdentityArn"] == workload_arn(name)
    assert updated["allowedResourceOauth2ReturnUrls"] == new_urls
    assert updated["createdTime"] == got["createdTime"]
    assert updated["lastUpdatedTime"] > got["lastUpdatedTime"]

    again = cp.get_workload_identity(name=name)
    assert again["allowedResourceOauth2ReturnUrls"] == new_urls  # replaced, not merged
    assert again["createdTime"] == got["createdTime"]
    assert again["lastUpdatedTime"] == updated["lastUpdatedTime"]

    assert_deleted(
        lambda: cp.delete_workload_identity(name=name),
        get=lambda: cp.get_workload_identity(name=name),
        delete_again=lambda: cp.delete_workload_identity(name=name),
        update=lambda: cp.update_workload_identity(name=name, allowedResourceOauth2ReturnUrls=[]),
    )


def test_update_to_empty_list(cp) -> None:
    name = uniq("wl-empty")
    cp.create_workload_identity(name=name, allowedResourceOauth2ReturnUrls=["https://a.example.test/cb"])
    cp.update_workload_identity(name=name, allowedResourceOauth2ReturnUrls=[])
    got = cp.get_workload_identity(name=name)
    assert got.get("allowedResourceOauth2ReturnUrls", []) == []


def test_create_without_urls(cp) -> None:
    name = uniq("wl-nourls")
    created = cp.create_workload_identity(name=name)
    assert created["name"] == name
    assert created.get("allowedResourceOauth2ReturnUrls", []) == []
    assert cp.get_workload_identity(name=name)["name"] == name


def test_duplicate_create_conflicts(cp) -> None:
    name = uniq("wl-dup")
    cp.create_workload_identity(name=name, allowedResourceOauth2ReturnUrls=["https://a.example.test/cb"])
    with raises_code("ConflictException"):
        cp.create_workload_identity(name=name, allowedResourceOauth2ReturnUrls=[])
    # The original is untouched.
    assert cp.get_workload_identity(name=name)["allowedResourceOauth2ReturnUrls"] == ["https://a.example.test/cb"]


def test_name_edge_lengths_and_chars(cp) -> None:
    short = "a" + uniq("")[-2:]  # exactly 3 characters
    assert len(short) == 3
    long_name = (uniq("l") + "x" * 255)[:255]
    odd = uniq("A_b.c-D")
    for name in (short, long_name, odd):
        try:
            cp.create_workload_identity(name=name)
        except cp.exceptions.ConflictException:
            assert name == short  # a 3-char name can collide across runs on a shared database
        assert cp.get_workload_identity(name=name)["name"] == name


def test_list_pagination(cp) -> None:
    prefix = uniq("page")
    names = {f"{prefix}-{i:02d}" for i in range(25)}
    for n in sorted(names):
        cp.create_workload_identity(name=n)

    seen: list[str] = []
    all_seen: list[str] = []
    token = None
    pages = 0
    while True:
        kwargs = {"maxResults": 7}
        if token:
            kwargs["nextToken"] = token
        page = cp.list_workload_identities(**kwargs)
        pages += 1
        assert pages < 1000, "pagination does not terminate"
        items = page["workloadIdentities"]
        assert len(items) <= 7
        for item in items:
            assert item["workloadIdentityArn"] == workload_arn(item["name"])
            all_seen.append(item["name"])
            if item["name"] in names:
                seen.append(item["name"])
        token = page.get("nextToken")
        if not token:
            break
        assert items, "a non-final page must not be empty"
    assert sorted(seen) == sorted(names)
    assert len(seen) == len(set(seen)) == 25
    assert len(all_seen) == len(set(all_seen)), "a name was listed twice"
    assert pages >= 4


def test_list_default_page_size(cp) -> None:
    page = cp.list_workload_identities()
    assert "workloadIdentities" in page
    assert len(page["workloadIdentities"]) <= 20


def test_list_paginator(cp) -> None:
    prefix = uniq("pgr")
    for i in range(3):
        cp.create_workload_identity(name=f"{prefix}-{i}")
    paginator = cp.get_paginator("list_workload_identities")
    names = [
        item["name"]
        for page in paginator.paginate(PaginationConfig={"PageSize": 2})
        for item in page["workloadIdentities"]
    ]
    assert len(names) == len(set(names))
    assert {f"{prefix}-{i}" for i in range(3)} <= set(names)


def test_invalid_next_token(cp) -> None:
    with raises_code("ValidationException"):
        cp.list_workload_identities(nextToken="this-is-not-a-token!!", maxResults=5)


def test_unknown_workload(cp) -> None:
    with raises_code("ResourceNotFoundException"):
        cp.get_workload_identity(name=uniq("missing"))
