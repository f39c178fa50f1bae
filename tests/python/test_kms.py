"""The KMS key provider (`key_provider = "aws-kms"`) against moto's real KMS wire protocol
on loopback: the key-encryption keys live only wrapped by KMS in the shared database,
replicas share nothing else, rotation and `SetTokenVaultCMK` / `ResetTokenVaultKeyMaterial`
re-wrap without decrypting a secret, and every unusable key stops the start with a clear
error. Runs on SQLite and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from lk_harness import Latchkey, fresh_database, raises_code, uniq
from moto_harness import Moto

DEPLOYMENT = "latchkey-test"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    m = Moto(tmp_path_factory.mktemp("moto-kms"))
    yield m
    m.stop()


@pytest.fixture
def db_url() -> Iterator[str | None]:
    with fresh_database("kms") as url:
        yield url


def new_key(moto: Moto, description: str = "latchkey test") -> str:
    return moto.kms().create_key(Description=description)["KeyMetadata"]["Arn"]


def key_uuid(arn: str) -> str:
    """moto's key-management calls want the key id, not the ARN."""
    return arn.rsplit("/", 1)[-1]


def kms_server(
    moto: Moto,
    key: str,
    data_dir: Path,
    workdir: Path,
    db_url: str | None,
    *,
    deployment: str = DEPLOYMENT,
    endpoint: str | None = None,
) -> Latchkey:
    env = {
        **moto.aws_env(),
        "LATCHKEY_KEY_PROVIDER": "aws-kms",
        "LATCHKEY_KMS_KEY_ID": key,
        "LATCHKEY_KMS_ENDPOINT_URL": endpoint or moto.url,
        "LATCHKEY_KMS_TIMEOUT_MS": "3000",
        "LATCHKEY_DEPLOYMENT_NAME": deployment,
    }
    lk = Latchkey(data_dir, workdir, db_url=db_url, extra_env=env)
    lk.key_file = None  # no key file: the keys are in the database
    return lk


def kek_rows(lk: Latchkey) -> list[tuple[str, int, str]]:
    sql = "SELECT id, generation, kms_key_arn FROM key_encryption_keys ORDER BY generation"
    if lk.db_url:
        out = subprocess.run(["psql", lk.db_url, "-At", "-F", "\t", "-c", sql], check=True, capture_output=True, text=True).stdout
        return [(i, int(g), a) for i, g, a in (line.split("\t") for line in out.splitlines() if line)]
    with sqlite3.connect(Path(lk.data_dir) / "latchkey.db") as db:
        return [(str(i), int(g), str(a)) for i, g, a in db.execute(sql)]


def start_fails(lk: Latchkey, timeout: float = 40) -> str:
    """`serve identity` must exit non-zero without listening; its error output."""
    cmd = [lk.bin, "serve", "identity", "--listen", "127.0.0.1:0", *lk.storage_args()]
    began = time.monotonic()
    cp = subprocess.run(cmd, env=lk.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert cp.returncode != 0, f"the service started:\n{cp.stdout}\n{cp.stderr}"
    assert "listening on" not in cp.stdout
    with open(lk.cli_log_path, "a", encoding="utf-8") as f:
        f.write(f"$ latchkey serve identity (expected to fail)\n{cp.stderr}")
    assert time.monotonic() - began < timeout
    return cp.stderr


def grant_lines(lk: Latchkey) -> list[str]:
    return [line for line in lk.cli("admin", "grants", "list").stdout.splitlines() if line.strip()]


def vault_status(lk: Latchkey) -> dict[str, Any]:
    return json.loads(lk.cli("admin", "vault", "status").stdout)


def test_first_start_restart_no_key_on_disk(moto: Moto, db_url: str | None, tmp_path: Path) -> None:
    key = new_key(moto)
    lk = kms_server(moto, key, tmp_path / "data", tmp_path / "run", db_url)
    lk.start()
    try:
        rows = kek_rows(lk)
        assert len(rows) == 1 and rows[0][1] == 1 and rows[0][2] == key, rows
        assert not (tmp_path / "data" / "kek.json").exists(), "a key file was written"
        vault = lk.cp().get_token_vault()
        assert vault["kmsConfiguration"] == {"keyType": "ServiceManagedKey"}
        name = uniq("kms-wl")
        lk.cp().create_workload_identity(name=name)
    finally:
        lk.stop()
    # A restart unwraps the same key: the admin credential's sealed secret still opens.
    lk.start()
    try:
        assert kek_rows(lk) == rows
        assert lk.cp().get_workload_identity(name=name)["name"] == name
        status = vault_status(lk)
        assert status["keyProvider"] == "aws-kms" and status["activeKeyId"] == rows[0][0]
        assert set(status["envelopesByKeyId"]) == {rows[0][0]}
    finally:
        lk.stop()
    # No file in the data directory holds key material.
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file() and path.suffix == ".json":
            assert "keys" not in path.read_text(errors="replace"), path


def test_two_replicas_and_online_rotation(moto: Moto, db_url: str | None, tmp_path: Path) -> None:
    key = new_key(moto)
    a = kms_server(moto, key, tmp_path / "a", tmp_path / "run-a", db_url)
    a.start()
    # The second replica: its own data directory, the same database and KMS key.
    b = kms_server(moto, key, tmp_path / "b" if db_url else tmp_path / "a", tmp_path / "run-b", db_url)
    b.admin = a.admin
    b.start()
    try:
        first = kek_rows(a)
        assert len(first) == 1
        # What one replica seals, the other opens.
        cred = a.create_credential("admin")
        assert b.cp(cred).get_token_vault()["tokenVaultId"] == "default"
        name = uniq("replica")
        b.cp().create_workload_identity(name=name)
        assert a.cp(cred).get_workload_identity(name=name)["name"] == name

        out = json.loads(a.cli("admin", "vault", "rotate-key", "--grace-seconds", "3").stdout)
        assert out["keyProvider"] == "aws-kms"
        assert out["previousKeyId"] == first[0][0] and out["activeKeyId"] != first[0][0]
        assert out["rewrap"]["total"]["failed"] == 0
        assert out["retiredKeyIds"] == [first[0][0]], out
        assert [r[0] for r in kek_rows(a)] == [out["activeKeyId"]]
        # Both replicas keep serving: old credentials (re-wrapped) and new ones.
        after = a.create_credential("admin")
        for server in (a, b):
            for c in (a.admin, cred, after):
                assert server.cp(c).get_token_vault()["tokenVaultId"] == "default"
        assert set(vault_status(a)["envelopesByKeyId"]) == {out["activeKeyId"]}
        for server in (a, b):
            assert "BEGIN" not in server.log_text()
    finally:
        b.stop()
        a.stop()


def test_customer_managed_key_and_reset(moto: Moto, db_url: str | None, tmp_path: Path) -> None:
    kms = moto.kms()
    service_key = new_key(moto, "service")
    lk = kms_server(moto, service_key, tmp_path / "data", tmp_path / "run", db_url)
    lk.start()
    try:
        cp = lk.cp()
        # Without a usable key nothing changes: disabled, unknown.
        disabled = new_key(moto, "disabled")
        kms.disable_key(KeyId=key_uuid(disabled))
        for bad in (disabled, "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"):
            with raises_code("ValidationException"):
                cp.set_token_vault_cmk(kmsConfiguration={"keyType": "CustomerManagedKey", "kmsKeyArn": bad})
        assert cp.get_token_vault()["kmsConfiguration"] == {"keyType": "ServiceManagedKey"}
        assert {r[2] for r in kek_rows(lk)} == {service_key}
        # Reset is refused while no customer managed key was deleted.
        with raises_code("ValidationException"):
            cp.reset_token_vault_key_material(tokenVaultId="default")

        cmk = new_key(moto, "customer managed")
        out = cp.set_token_vault_cmk(kmsConfiguration={"keyType": "CustomerManagedKey", "kmsKeyArn": cmk})
        assert out["kmsConfiguration"] == {"keyType": "CustomerManagedKey", "kmsKeyArn": cmk}
        assert cp.get_token_vault()["kmsConfiguration"]["kmsKeyArn"] == cmk
        assert {r[2] for r in kek_rows(lk)} == {cmk}
        with raises_code("ValidationException"):
            cp.reset_token_vault_key_material(tokenVaultId="default")  # the CMK is enabled
        # Keys added from now on are wrapped by the customer managed key too.
        lk.cli("admin", "vault", "rotate-key", "--grace-seconds", "2")
        assert {r[2] for r in kek_rows(lk)} == {cmk}
    finally:
        lk.stop()
    lk.start()  # unwrapped under the customer managed key
    try:
        cp = lk.cp()
        provider = uniq("kms-provider")
        endpoints = "https://idp.example.test/oauth2"
        metadata = {"issuer": "https://idp.example.test", "authorizationEndpoint": f"{endpoints}/authorize", "tokenEndpoint": f"{endpoints}/token"}
        cp.create_oauth2_credential_provider(
            name=provider,
            credentialProviderVendor="CustomOauth2",
            oauth2ProviderConfigInput={"customOauth2ProviderConfig": {"oauthDiscovery": {"authorizationServerMetadata": metadata}, "clientId": "c", "clientSecret": "kms-test-client-secret"}},
        )
        lk.cli("admin", "grants", "seed", "--workload", "w", "--provider", provider, "--count", "3")
        assert len(grant_lines(lk)) == 3
        kms.schedule_key_deletion(KeyId=key_uuid(cmk), PendingWindowInDays=7)
        out = cp.reset_token_vault_key_material(tokenVaultId="default")
        assert out["kmsConfiguration"] == {"keyType": "ServiceManagedKey"}
        # The OAuth tokens are wiped, the keys are wrapped by the service key again.
        assert grant_lines(lk) == []
        assert {r[2] for r in kek_rows(lk)} == {service_key}
        assert cp.get_oauth2_credential_provider(name=provider)["name"] == provider  # kept
        name = uniq("after-reset")
        cp.create_workload_identity(name=name)
    finally:
        lk.stop()
    lk.start()  # the deleted key is not needed any more
    try:
        assert lk.cp().get_workload_identity(name=name)["name"] == name
    finally:
        lk.stop()
    audit = lk.cli("admin", "audit", "list").stdout
    assert "ResetTokenVaultKeyMaterial" in audit and "SetTokenVaultCMK" in audit


def test_unusable_keys_refuse_to_start(moto: Moto, db_url: str | None, tmp_path: Path) -> None:
    kms = moto.kms()
    key = new_key(moto)
    lk = kms_server(moto, key, tmp_path / "data", tmp_path / "run", db_url)
    lk.start()
    lk.stop()
    rows = kek_rows(lk)

    # Another deployment's name: the encryption context does not match.
    other = kms_server(moto, key, tmp_path / "data", tmp_path / "run", db_url, deployment="someone-else")
    err = start_fails(other)
    assert "another deployment" in err and rows[0][0] in err, err

    # A key that does not exist.
    ghost = kms_server(moto, "alias/no-such-key", tmp_path / "data", tmp_path / "run", db_url)
    err = start_fails(ghost)
    assert "alias/no-such-key does not exist" in err, err

    # KMS unreachable: a closed port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    lost = kms_server(moto, key, tmp_path / "data", tmp_path / "run", db_url, endpoint=closed)
    err = start_fails(lost)
    assert f"cannot reach AWS KMS at {closed}" in err, err

    # The key disabled, then pending deletion: each named, with what to do.
    kms.disable_key(KeyId=key_uuid(key))
    err = start_fails(lk)
    assert f"{key} is disabled" in err, err
    kms.enable_key(KeyId=key_uuid(key))
    kms.schedule_key_deletion(KeyId=key_uuid(key), PendingWindowInDays=7)
    err = start_fails(lk)
    assert "pending deletion" in err and "cancel" in err, err
    kms.cancel_key_deletion(KeyId=key_uuid(key))
    kms.enable_key(KeyId=key_uuid(key))
    lk.start()  # usable again: nothing was lost
    lk.stop()
    assert kek_rows(lk) == rows


def test_kms_settings_are_checked(tmp_path: Path) -> None:
    """A KMS setting without the KMS provider, or the KMS provider without a key, is refused
    before anything is created."""
    lk = Latchkey(tmp_path / "data", tmp_path / "run", extra_env={"LATCHKEY_KMS_KEY_ID": "alias/x"})
    cp = lk.cli("admin", "init", check=False)
    assert cp.returncode != 0 and "kms_key_id" in cp.stderr and "aws-kms" in cp.stderr, cp.stderr
    lk = Latchkey(tmp_path / "data", tmp_path / "run", extra_env={"LATCHKEY_KEY_PROVIDER": "aws-kms"})
    lk.key_file = None
    cp = lk.cli("admin", "init", check=False)
    assert cp.returncode != 0 and "kms_key_id" in cp.stderr and "required" in cp.stderr, cp.stderr
    assert not (tmp_path / "data" / "kek.json").exists()
