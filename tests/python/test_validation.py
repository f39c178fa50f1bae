"""Contract 10: validation errors, limits, unknown paths and the health check."""

from __future__ import annotations

import json

import pytest
import requests

from lk_harness import Latchkey, assert_error_response, uniq

CREATE = "/identities/CreateWorkloadIdentity"


def listed_names(server: Latchkey) -> set[str]:
    names: set[str] = set()
    token = None
    for _ in range(1000):
        body: dict = {"maxResults": 20}
        if token:
            body["nextToken"] = token
        r = server.signed("POST", "/identities/ListWorkloadIdentities", body)
        assert r.status_code == 200, r.text
        data = r.json()
        names.update(w["name"] for w in data["workloadIdentities"])
        token = data.get("nextToken")
        if not token:
            return names
    raise AssertionError("pagination does not terminate")


@pytest.mark.parametrize(
    "name",
    ["ab", "x" * 256, "bad name!", "slash/name", "ünïcode", ""],
    ids=["too-short", "too-long", "bad-chars", "slash", "unicode", "empty"],
)
def test_create_workload_bad_name(server: Latchkey, name: str) -> None:
    r = server.signed("POST", CREATE, {"name": name})
    body = assert_error_response(r, 400, "ValidationException")
    assert body["reason"] == "FieldValidationFailed", body
    assert body["fieldList"][0]["name"] == "name", body
    assert body["fieldList"][0].get("message"), body
    assert name not in listed_names(server)


def test_missing_required_member(server: Latchkey) -> None:
    r = server.signed("POST", CREATE, {})
    body = assert_error_response(r, 400, "ValidationException")
    assert body["reason"] == "FieldValidationFailed", body
    assert any(f["name"] == "name" for f in body.get("fieldList", [])), body


def test_wrong_member_type(server: Latchkey) -> None:
    r = server.signed("POST", CREATE, {"name": uniq("typed"), "allowedResourceOauth2ReturnUrls": "not-a-list"})
    body = assert_error_response(r, 400, "ValidationException")
    assert body["reason"] in ("CannotParse", "FieldValidationFailed"), body


def test_bad_return_url(server: Latchkey) -> None:
    name = uniq("badurl")
    r = server.signed("POST", CREATE, {"name": name, "allowedResourceOauth2ReturnUrls": ["not a url"]})
    body = assert_error_response(r, 400, "ValidationException")
    assert body["reason"] == "FieldValidationFailed", body
    assert body["fieldList"][0]["name"].startswith("allowedResourceOauth2ReturnUrls"), body
    assert name not in listed_names(server)


def test_malformed_json(server: Latchkey) -> None:
    r = server.signed("POST", CREATE, b'{"name": "abc",')
    body = assert_error_response(r, 400, "ValidationException")
    assert body["reason"] == "CannotParse", body


def test_non_object_json(server: Latchkey) -> None:
    r = server.signed("POST", CREATE, b'["name"]')
    body = assert_error_response(r, 400, "ValidationException")
    assert body["reason"] in ("CannotParse", "FieldValidationFailed"), body


def test_max_results_too_big(server: Latchkey) -> None:
    r = server.signed("POST", "/identities/ListWorkloadIdentities", {"maxResults": 21})
    body = assert_error_response(r, 400, "ValidationException")
    assert body["reason"] == "FieldValidationFailed", body
    assert body["fieldList"][0]["name"] == "maxResults", body
    r = server.signed("POST", "/identities/ListWorkloadIdentities", {"maxResults": 0})
    body = assert_error_response(r, 400, "ValidationException")
    assert body["fieldList"][0]["name"] == "maxResults", body


def test_max_results_via_boto3(cp) -> None:
    from lk_harness import raises_code

    with raises_code("ValidationException"):
        cp.list_workload_identities(maxResults=21)
    with raises_code("ValidationException"):
        cp.list_oauth2_credential_providers(maxResults=21)


def test_body_over_one_mib(server: Latchkey) -> None:
    big = json.dumps({"name": uniq("big"), "allowedResourceOauth2ReturnUrls": ["https://a.example.test/" + "x" * (1024 * 1024)]})
    r = server.signed("POST", CREATE, big.encode())
    assert 400 <= r.status_code < 500 and r.status_code in (400, 413), (r.status_code, r.text[:500])
    body = r.json()
    assert isinstance(body, dict) and body.get("message"), body


def test_unknown_path(server: Latchkey) -> None:
    r = server.signed("POST", "/identities/NoSuchOperation", {})
    assert r.status_code == 404, (r.status_code, r.text)
    assert isinstance(r.json(), dict) and r.json().get("message")
    r = server.signed("GET", "/definitely/not/here")
    assert r.status_code == 404, (r.status_code, r.text)
    assert isinstance(r.json(), dict)


def test_ping_is_healthy(server: Latchkey) -> None:
    r = requests.get(server.url + "/ping", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "Healthy", body


def test_error_responses_carry_request_id(server: Latchkey) -> None:
    r = server.signed("POST", CREATE, {"name": "ab"})
    assert r.status_code == 400
    assert r.headers.get("x-amzn-RequestId"), r.headers
    ok = server.signed("POST", "/identities/ListWorkloadIdentities", {"maxResults": 1})
    assert ok.headers.get("x-amzn-RequestId"), ok.headers


@pytest.mark.parametrize(
    "user_id",
    ["alice\nINFO forged log line", "alice\r", "\x1b[31malice\x1b[0m", "alice\x7f", "alice\u0085", "alice\u2028x", "\u202enimda"],
    ids=["newline", "cr", "ansi", "del", "c1-nel", "line-separator", "rtl-override"],
)
def test_user_id_with_control_characters(server: Latchkey, user_id: str) -> None:
    # AgentCore's UserIdType only bounds the length; Latchkey also refuses characters that
    # could forge a log line or disguise a name, before anything else happens.
    r = server.signed(
        "POST", "/identities/GetWorkloadAccessTokenForUserId", {"workloadName": uniq("wl"), "userId": user_id}
    )
    body = assert_error_response(r, 400, "ValidationException")
    assert body["fieldList"][0]["name"] == "userId", body
    assert "control" in body["fieldList"][0]["message"], body
    r = server.signed(
        "POST",
        "/identities/CompleteResourceTokenAuth",
        {"userIdentifier": {"userId": user_id}, "sessionUri": "urn:ietf:params:oauth:request_uri:abc"},
    )
    body = assert_error_response(r, 400, "ValidationException")
    assert body["fieldList"][0]["name"] == "userIdentifier.userId", body
