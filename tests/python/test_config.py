"""Configuration: zero-config start, precedence (flag > env > file), `*_FILE` secrets, and
start-up validation that names the failing key."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from lk_harness import latchkey_bin, storage


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment without LATCHKEY_* settings, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    base.update(env or {})
    return base


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([latchkey_bin(), *args], env=clean_env(env), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_starts(args: list[str], env: dict[str, str] | None = None) -> None:
    """`latchkey ARGS` prints its listening line; then it is stopped."""
    proc = subprocess.Popen(
        [latchkey_bin(), *args], env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline(), args
    finally:
        proc.terminate()
        proc.wait(20)


def test_zero_config_creates_private_data_dir_and_key_file(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "latchkey"
    out = run(["admin", "init", "--data-dir", str(data)])
    assert out.returncode == 0, out.stderr
    assert "Key file:" in out.stdout and "(created)" in out.stdout, out.stdout
    assert (data / "latchkey.db").exists()
    key = data / "kek.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    out = run(["admin", "credentials", "create", "--role", "admin", "--json", "--data-dir", str(data)])
    assert out.returncode == 0, out.stderr
    # Created once: a second init, and any other command, keep the same key file.
    before = key.read_bytes()
    again = run(["admin", "init", "--json", "--data-dir", str(data)])
    assert again.returncode == 0, again.stderr
    assert '"keyFileState":"existing"' in again.stdout and '"databaseState":"existing"' in again.stdout, again.stdout
    assert run(["admin", "credentials", "list", "--json", "--data-dir", str(data)]).returncode == 0
    assert key.read_bytes() == before


ADMIN_COMMANDS = [
    ["credentials", "create", "--role", "admin", "--json"],
    ["credentials", "list"],
    ["credentials", "revoke", "LKNOSUCHKEY"],
    ["audit", "list"],
    ["audit", "verify"],
    ["grants", "list"],
    ["vault", "status"],
    ["vault", "rotate-key", "--grace-seconds", "0"],
]


def test_admin_refuses_a_target_without_server_state_and_creates_nothing(tmp_path: Path) -> None:
    """Issue 14: `latchkey admin …` pointed at a data directory or database that holds no
    installation says so, naming it and the command that initialises it, instead of
    creating a new key and database."""
    absent = tmp_path / "typo" / "latchkey"
    empty = tmp_path / "empty"
    empty.mkdir()
    for data in (absent, empty):
        for command in ADMIN_COMMANDS:
            out = run(["admin", *command, "--data-dir", str(data)])
            assert out.returncode != 0, (command, out.stdout)
            assert f"no Latchkey server state in the data directory {data}" in out.stderr, (command, out.stderr)
            assert "latchkey admin init" in out.stderr and "Nothing was created" in out.stderr, out.stderr
        assert not absent.exists(), "a refused admin command created the data directory"
        assert list(empty.iterdir()) == [], f"a refused admin command created {list(empty.iterdir())}"

    # A key file without the database (a wrong --database-url, a deleted file): refused, and
    # the database is not created.
    data = tmp_path / "no-db"
    assert run(["admin", "init", "--data-dir", str(data)]).returncode == 0
    (data / "latchkey.db").unlink()
    for extra in ("latchkey.db-wal", "latchkey.db-shm"):
        (data / extra).unlink(missing_ok=True)
    out = run(["admin", "credentials", "list", "--data-dir", str(data)])
    assert out.returncode != 0 and "has no Latchkey tables" in out.stderr and "latchkey admin init" in out.stderr, out.stderr
    assert not (data / "latchkey.db").exists()

    # The database without its key file (a wrong --key-file): refused, and no new key is made.
    data = tmp_path / "no-key"
    assert run(["admin", "init", "--data-dir", str(data)]).returncode == 0
    (data / "kek.json").unlink()
    out = run(["admin", "credentials", "create", "--role", "admin", "--data-dir", str(data)])
    assert out.returncode != 0 and "holds a Latchkey installation, but its key file" in out.stderr, out.stderr
    assert not (data / "kek.json").exists()

    # `serve identity` still initialises an installation at its first start (as `latchkey
    # dev` does), and the admin commands then work on it.
    data = tmp_path / "served"
    assert_starts(["serve", "identity", "--listen", "127.0.0.1:0", "--data-dir", str(data)])
    assert run(["admin", "credentials", "list", "--data-dir", str(data)]).returncode == 0


def test_admin_refuses_an_empty_postgres_database_and_creates_no_table(tmp_path: Path) -> None:
    base = os.environ.get("LATCHKEY_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    if storage() != "postgres":
        pytest.skip("PostgreSQL run only")
    name = "latchkey_uninit_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", base, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        out = run(["admin", "credentials", "create", "--role", "admin", "--data-dir", str(tmp_path), "--database-url", url])
        assert out.returncode != 0, out.stdout
        assert f"no Latchkey server state in the data directory {tmp_path}" in out.stderr and name in out.stderr, out.stderr
        tables = subprocess.run(
            ["psql", url, "-tAc", "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        assert tables == "0", f"a refused admin command created {tables} table(s)"
        assert not (tmp_path / "kek.json").exists()
        assert run(["admin", "init", "--data-dir", str(tmp_path), "--database-url", url]).returncode == 0
        assert run(["admin", "credentials", "list", "--data-dir", str(tmp_path), "--database-url", url]).returncode == 0
    finally:
        subprocess.run(["psql", base, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    assert run(["admin", "init", "--data-dir", str(tmp_path)]).returncode == 0
    (tmp_path / "kek.json").chmod(0o644)
    out = run(["admin", "credentials", "list", "--data-dir", str(tmp_path)])
    assert out.returncode != 0
    assert "chmod 600" in out.stderr


def test_invalid_values_name_the_key(tmp_path: Path) -> None:
    cases = [
        (["--listen", "not-an-address"], {}, "`listen`"),
        ([], {"LATCHKEY_WAT_TTL_SECONDS": "5"}, "`wat_ttl_seconds`"),
        ([], {"LATCHKEY_PUBLIC_URL": "ftp://x"}, "`public_url`"),
        ([], {"LATCHKEY_ARN_ACCOUNT": "12"}, "`arn.account`"),
        ([], {"LATCHKEY_DATABASE_URL": "mysql://x"}, "`database_url`"),
        ([], {"LATCHKEY_INBOUND_ISSUERS": '[{"issuer":"https://idp.example","audiences":["a"],"algorithms":["HS256"]}]'}, "inbound_issuers[0]"),
        ([], {"LATCHKEY_INBOUND_ISSUERS": '[{"issuer":"https://idp.example","audiences":[]}]'}, "audiences"),
    ]
    for flags, env, key in cases:
        out = run(["serve", "identity", "--data-dir", str(tmp_path), *flags], env=env)
        assert out.returncode != 0, (flags, env)
        assert key in out.stderr, (key, out.stderr)


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "latchkey.toml"
    conf.write_text('listen = "127.0.0.1:0"\nwat_ttl_secs = 60\n')
    out = run(["serve", "identity", "--config", str(conf), "--data-dir", str(tmp_path)])
    assert out.returncode != 0
    assert "wat_ttl_secs" in out.stderr


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    conf = tmp_path / "latchkey.toml"
    conf.write_text('wat_ttl_seconds = 5\n')  # invalid in the file…
    # …but the environment overrides it with a valid value, and a flag overrides the env.
    out = run(["serve", "identity", "--config", str(conf), "--data-dir", str(tmp_path), "--listen", "bad"], env={"LATCHKEY_WAT_TTL_SECONDS": "120"})
    assert "`listen`" in out.stderr and "wat_ttl_seconds" not in out.stderr, out.stderr
    out = run(["serve", "identity", "--config", str(conf), "--data-dir", str(tmp_path), "--wat-ttl-seconds", "7"], env={"LATCHKEY_WAT_TTL_SECONDS": "120"})
    assert "`wat_ttl_seconds`" in out.stderr, out.stderr


def test_database_url_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "db-url"
    secret_file.write_text(f"sqlite://{tmp_path / 'from-file.db'}?mode=rwc\n")
    out = run(["admin", "init", "--data-dir", str(tmp_path)], env={"LATCHKEY_DATABASE_URL_FILE": str(secret_file)})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "from-file.db").exists()
    out = run(["admin", "credentials", "list", "--data-dir", str(tmp_path)], env={"LATCHKEY_DATABASE_URL_FILE": str(secret_file)})
    assert out.returncode == 0, out.stderr
    both = run(["admin", "credentials", "list", "--data-dir", str(tmp_path), "--database-url", "sqlite://x"], env={"LATCHKEY_DATABASE_URL_FILE": str(secret_file)})
    assert both.returncode != 0 and "database_url" in both.stderr


def test_database_password_never_printed(tmp_path: Path) -> None:
    out = run(["admin", "credentials", "list", "--data-dir", str(tmp_path), "--database-url", "postgres://user:hunter2-db-password@127.0.0.1:1/none"], timeout=60)
    assert out.returncode != 0
    assert "hunter2-db-password" not in out.stderr + out.stdout


SIGNER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1"


def test_a_private_outbound_url_without_the_opt_in_stops_the_start(tmp_path: Path) -> None:
    """Issue 14: a service whose configured outbound URL (one its guarded client calls) is
    plain http or a loopback/private address, with the private-address opt-in off, refuses
    to start, naming the key and the setting, instead of answering 502 once a user is
    mid-flow. The setting has one name and shape in every service."""
    agent = ["serve", "agent", "--identity-url", "http://127.0.0.1:9", "--workload-name", "wl-x", "--return-url", "http://127.0.0.1:9/b",
             "--llm-provider", "openai", "--llm-model", "m"]
    cases = [
        (["serve", "binding", "--identity-url", "http://127.0.0.1:9", "--alb-signer", SIGNER, "--alb-key-url-template", "http://127.0.0.1:9/{kid}"],
         {"LATCHKEY_BINDING_CREDENTIAL": "LKTEST:secret-0123456789"}, "binding.alb_key_url_template", "binding.outbound.allow_private_addresses"),
        ([*agent, "--oidc-issuer", "https://10.0.0.7/realm", "--oidc-audience", "app"],
         {"LATCHKEY_AGENT_CREDENTIAL": "LKTEST:secret-0123456789", "LATCHKEY_AGENT_LLM_API_KEY": "sk-x"}, "agent.oidc_issuer", "agent.outbound.allow_private_addresses"),
        (["serve", "gateway", "--oidc-issuer", "https://localhost/realm", "--oidc-client-id", "c", "--route", "/=http://127.0.0.1:9;login"],
         {"LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET": "s"}, "gateway.oidc_issuer", "gateway.outbound.allow_private_addresses"),
        (["serve", "identity"], {"LATCHKEY_INBOUND_ISSUERS": '[{"issuer":"https://192.168.0.10","audiences":["a"]}]'}, "inbound_issuers", "outbound.allow_private_addresses"),
    ]
    for args, env, key, setting in cases:
        data = tmp_path / args[1]
        out = run([*args, "--listen", "127.0.0.1:0", "--data-dir", str(data)], env=env, timeout=60)
        assert out.returncode != 0 and "listening" not in out.stdout, (args[1], out.stdout, out.stderr)
        assert f"invalid configuration key `{key}`" in out.stderr, out.stderr
        env_name = "LATCHKEY_" + setting.upper().replace(".", "_")
        for needle in (f"`{setting}`", env_name, "--outbound-allow-private-addresses"):
            assert needle in out.stderr, (needle, out.stderr)
        assert not data.exists(), f"serve {args[1]} created {data} before refusing"

    # With the opt-in, the same binding starts.
    assert_starts([*cases[0][0], "--outbound-allow-private-addresses", "--listen", "127.0.0.1:0"], cases[0][1])
