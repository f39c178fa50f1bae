"""Configuration: zero-config start, precedence (flag > env > file), `*_FILE` secrets, and
start-up validation that names the failing key."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from lk_harness import latchkey_bin


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    base.update(env or {})
    return subprocess.run([latchkey_bin(), *args], env=base, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_zero_config_creates_private_data_dir_and_key_file(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "latchkey"
    out = run(["admin", "credentials", "create", "--role", "admin", "--json", "--data-dir", str(data)])
    assert out.returncode == 0, out.stderr
    assert (data / "latchkey.db").exists()
    key = data / "kek.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    # Created once: a second run keeps the same key file.
    before = key.read_bytes()
    assert run(["admin", "credentials", "list", "--json", "--data-dir", str(data)]).returncode == 0
    assert key.read_bytes() == before


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    assert run(["admin", "credentials", "list", "--data-dir", str(tmp_path)]).returncode == 0
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
    out = run(["admin", "credentials", "list", "--data-dir", str(tmp_path)], env={"LATCHKEY_DATABASE_URL_FILE": str(secret_file)})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "from-file.db").exists()
    both = run(["admin", "credentials", "list", "--data-dir", str(tmp_path), "--database-url", "sqlite://x"], env={"LATCHKEY_DATABASE_URL_FILE": str(secret_file)})
    assert both.returncode != 0 and "database_url" in both.stderr


def test_database_password_never_printed(tmp_path: Path) -> None:
    out = run(["admin", "credentials", "list", "--data-dir", str(tmp_path), "--database-url", "postgres://user:hunter2-db-password@127.0.0.1:1/none"], timeout=60)
    assert out.returncode != 0
    assert "hunter2-db-password" not in out.stderr + out.stdout
