"""Contracts 8 and 9: SigV4 verification (with tampering) and bearer API keys."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests

from lk_harness import Latchkey, assert_error_response, new_workload, signed_request, uniq

WAT_PATH = "/identities/GetWorkloadAccessToken"


@pytest.fixture(scope="module")
def workload(cp) -> str:
    return new_workload(cp, "auth-wl")


def body_for(workload: str) -> bytes:
    return json.dumps({"workloadName": workload}).encode()


# --------------------------------------------------------------------------- SigV4
def test_correct_signature_works(server: Latchkey, workload: str) -> None:
    r = server.signed("POST", WAT_PATH, body_for(workload))
    assert r.status_code == 200, r.text
    assert r.json()["workloadAccessToken"].count(".") == 2
    assert r.headers["content-type"].startswith("application/json")


def test_any_region_is_accepted(server: Latchkey, workload: str) -> None:
    r = server.signed("POST", WAT_PATH, body_for(workload), region="eu-west-1")
    assert r.status_code == 200, r.text


def test_extra_signed_headers_are_accepted(server: Latchkey, workload: str) -> None:
    # The AWS SDK for Rust signs content-length and x-amz-user-agent too.
    body = body_for(workload)
    r = server.signed(
        "POST",
        WAT_PATH,
        body,
        headers={"Content-Length": str(len(body)), "X-Amz-User-Agent": "aws-sdk-rust/1.0 latchkey-test"},
    )
    assert r.status_code == 200, r.text


def test_control_plane_signed_raw(server: Latchkey) -> None:
    r = server.signed("POST", "/identities/ListWorkloadIdentities", {"maxResults": 1})
    assert r.status_code == 200, r.text
    assert "workloadIdentities" in r.json()


def test_wrong_secret(server: Latchkey, workload: str) -> None:
    assert server.admin is not None
    r = signed_request(server.url, "POST", WAT_PATH, body_for(workload), server.admin.access_key_id, "not-the-secret")
    assert_error_response(r, 401, "UnauthorizedException")


def test_body_changed_after_signing(server: Latchkey, workload: str) -> None:
    other = uniq("other")
    r = server.signed("POST", WAT_PATH, body_for(workload), body_after_signing=body_for(other))
    assert_error_response(r, 401, "UnauthorizedException")


def test_stale_date(server: Latchkey, workload: str) -> None:
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    r = server.signed("POST", WAT_PATH, body_for(workload), when=when)
    assert r.request.headers["X-Amz-Date"] == when.strftime("%Y%m%dT%H%M%SZ")
    assert_error_response(r, 401, "UnauthorizedException")


def test_future_date(server: Latchkey, workload: str) -> None:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    r = server.signed("POST", WAT_PATH, body_for(workload), when=when)
    assert_error_response(r, 401, "UnauthorizedException")


def test_slightly_skewed_date_is_fine(server: Latchkey, workload: str) -> None:
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=3)
    r = server.signed("POST", WAT_PATH, body_for(workload), when=when)
    assert r.status_code == 200, r.text


def test_unknown_access_key(server: Latchkey, workload: str) -> None:
    r = signed_request(server.url, "POST", WAT_PATH, body_for(workload), "AKIDUNKNOWN000000000", "whatever-secret")
    assert_error_response(r, 401, "UnauthorizedException")


@pytest.mark.parametrize("service", ["bedrock-agentcore-control", "s3", "execute-api"])
def test_wrong_service_in_scope(server: Latchkey, workload: str, service: str) -> None:
    r = server.signed("POST", WAT_PATH, body_for(workload), service=service)
    assert_error_response(r, 401, "UnauthorizedException")


def test_no_authorization_header(server: Latchkey, workload: str) -> None:
    r = server.signed("POST", WAT_PATH, body_for(workload), drop_headers=("Authorization",))
    assert_error_response(r, 401, "UnauthorizedException")
    r = requests.post(server.url + WAT_PATH, json={"workloadName": workload}, timeout=10)
    assert_error_response(r, 401, "UnauthorizedException")
    r = requests.post(server.url + "/identities/ListWorkloadIdentities", json={}, timeout=10)
    assert_error_response(r, 401, "UnauthorizedException")


def test_signed_header_dropped_after_signing(server: Latchkey, workload: str) -> None:
    r = server.signed("POST", WAT_PATH, body_for(workload), drop_headers=("X-Amz-Date",))
    assert_error_response(r, 401, "UnauthorizedException")


def test_signature_altered(server: Latchkey, workload: str) -> None:
    from lk_harness import sign

    assert server.admin is not None
    req = sign(server.url + WAT_PATH, "POST", body_for(workload), server.admin.access_key_id, server.admin.secret_access_key)
    auth = req.headers["Authorization"]
    sig = auth.rsplit("Signature=", 1)[1]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    headers = dict(req.headers)
    headers["Authorization"] = auth.replace(sig, flipped)
    r = requests.post(req.url, data=req.body, headers=headers, timeout=10)
    assert_error_response(r, 401, "UnauthorizedException")


def test_unauthenticated_caller_learns_nothing_from_validation(server: Latchkey) -> None:
    # Authentication happens before the body is parsed.
    r = requests.post(
        server.url + "/identities/CreateWorkloadIdentity",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_error_response(r, 401, "UnauthorizedException")


# --------------------------------------------------------------------------- bearer keys
def test_bearer_key_works(server: Latchkey, workload: str) -> None:
    assert server.admin is not None
    r = requests.post(
        server.url + WAT_PATH,
        headers={"Authorization": server.admin.bearer, "Content-Type": "application/json"},
        json={"workloadName": workload},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["workloadAccessToken"].count(".") == 2


def test_bearer_key_control_plane(server: Latchkey) -> None:
    assert server.admin is not None
    r = requests.post(
        server.url + "/identities/ListWorkloadIdentities",
        headers={"Authorization": server.admin.bearer, "Content-Type": "application/json"},
        json={"maxResults": 2},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def test_bearer_workload_role_applies(server: Latchkey, workload: str) -> None:
    cred = server.create_credential(f"workload:{workload}")
    ok = requests.post(
        server.url + WAT_PATH,
        headers={"Authorization": cred.bearer, "Content-Type": "application/json"},
        json={"workloadName": workload},
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    denied = requests.post(
        server.url + "/identities/ListWorkloadIdentities",
        headers={"Authorization": cred.bearer, "Content-Type": "application/json"},
        json={},
        timeout=10,
    )
    assert_error_response(denied, 403, "AccessDeniedException")


@pytest.mark.parametrize(
    "make_header",
    [
        lambda c: f"Bearer {c.access_key_id}:wrong-secret-value",
        lambda c: f"Bearer {c.access_key_id}:{c.secret_access_key}x",
        lambda c: f"Bearer {c.access_key_id}",
        lambda c: "Bearer AKIDUNKNOWN000000000:whatever",
        lambda c: "Bearer ",
        lambda c: f"Basic {c.access_key_id}:{c.secret_access_key}",
    ],
    ids=["wrong-secret", "secret-suffix", "no-secret", "unknown-key", "empty", "wrong-scheme"],
)
def test_bad_bearer(server: Latchkey, workload: str, make_header) -> None:
    assert server.admin is not None
    r = requests.post(
        server.url + WAT_PATH,
        headers={"Authorization": make_header(server.admin), "Content-Type": "application/json"},
        json={"workloadName": workload},
        timeout=10,
    )
    assert_error_response(r, 401, "UnauthorizedException")


def test_revoked_bearer(server: Latchkey, workload: str) -> None:
    from lk_harness import eventually

    cred = server.create_credential("admin")

    def call() -> requests.Response:
        return requests.post(
            server.url + WAT_PATH,
            headers={"Authorization": cred.bearer, "Content-Type": "application/json"},
            json={"workloadName": workload},
            timeout=10,
        )

    assert call().status_code == 200
    server.revoke_credential(cred.access_key_id)
    eventually(lambda: assert_error_response(call(), 401, "UnauthorizedException"))


def test_session_token_is_signed_and_accepted(server: Latchkey, workload: str) -> None:
    # Temporary-credential style: boto3 adds and signs X-Amz-Security-Token.
    import boto3
    from botocore.config import Config

    admin = server.admin
    assert admin is not None
    client = boto3.client(
        "bedrock-agentcore",
        endpoint_url=server.url,
        region_name="ap-southeast-2",
        aws_access_key_id=admin.access_key_id,
        aws_secret_access_key=admin.secret_access_key,
        aws_session_token="session-token-value",
        config=Config(retries={"max_attempts": 1}),
    )
    seen: list[str] = []
    client.meta.events.register("before-send", lambda request, **_: seen.append(request.headers.get("Authorization", b"").decode() if isinstance(request.headers.get("Authorization"), bytes) else str(request.headers.get("Authorization"))))
    assert client.get_workload_access_token(workloadName=workload)["workloadAccessToken"]
    assert "x-amz-security-token" in seen[0], seen
