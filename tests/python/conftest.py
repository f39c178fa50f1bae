"""Fixtures for the real-client suite: the `latchkey` binary, oidc-provider, boto3 clients.

Storage: SQLite by default; `LATCHKEY_TEST_STORAGE=postgres` uses the database in
`LATCHKEY_TEST_DATABASE_URL` (scripts/test creates a fresh one per run). All servers of
one pytest session share one data directory (so one key-encryption key for the shared
database); every test names what it creates uniquely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

# boto3 must not pick up anything from the machine: no profiles, no endpoint overrides.
for _k in list(os.environ):
    if _k.startswith("AWS_ENDPOINT_URL") or _k in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "BEDROCK_AGENTCORE_DP_ENDPOINT",
        "BEDROCK_AGENTCORE_CP_ENDPOINT",
    ):
        del os.environ[_k]
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from lk_harness import Cred, Latchkey, database_url, latchkey_bin, storage  # noqa: E402
from secrets_sweep import SWEEP, install_http_hooks  # noqa: E402
from oidc import OidcProvider, running_provider  # noqa: E402
from authz_fixtures import authz_server, authz_server_rotating, resource_api  # noqa: E402,F401


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        binary = latchkey_bin()
    except RuntimeError as e:
        binary = f"MISSING ({e})"
    url = os.environ.get("LATCHKEY_TEST_DATABASE_URL", "-") if storage() == "postgres" else "-"
    return [f"latchkey: {binary}", f"storage: {storage()} (database {url})"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        funcargs = getattr(item, "funcargs", {}) or {}
        srv = funcargs.get("server")
        if isinstance(srv, Latchkey):
            report.sections.append(("latchkey server log (tail)", srv.log_tail(4000)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"secrets sweep: {SWEEP.summary()}")


# --------------------------------------------------------------------------- session
install_http_hooks()


@pytest.fixture(scope="session", autouse=True)
def secrets_sweep() -> Iterator[None]:
    """Issue 12: after every test (and every module's servers have stopped and flushed
    their logs), search every log and response body of the run for every secret the run
    created or received (secrets_sweep.py). A finding fails the run; it names the kind, a
    short SHA-256 fingerprint and the place, never the secret."""
    yield
    findings = SWEEP.scan()
    if findings:
        shown = "\n  ".join(str(f) for f in findings[:50])
        more = f"\n  … and {len(findings) - 50} more" if len(findings) > 50 else ""
        pytest.fail(f"secrets sweep: {len(findings)} secret(s) found where none may be ({SWEEP.summary()}):\n  {shown}{more}", pytrace=False)


@pytest.fixture(scope="session")
def latchkey_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"latchkey-data-{storage()}")


@pytest.fixture(scope="session")
def db_url() -> str | None:
    return database_url()


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One oidc-provider for the session (modules that rotate keys start their own)."""
    yield from running_provider(tmp_path_factory, "oidc")


# --------------------------------------------------------------------------- per module
@pytest.fixture(scope="module")
def server_config() -> str | None:
    """TOML passed with --config; modules override this fixture."""
    return None


@pytest.fixture(scope="module")
def server_log_level() -> str | None:
    """RUST_LOG for the server; None keeps the server's default."""
    return None


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    latchkey_data_dir: Path,
    db_url: str | None,
    tmp_path_factory: pytest.TempPathFactory,
    server_config: str | None,
    server_log_level: str | None,
) -> Iterator[Latchkey]:
    workdir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    lk = Latchkey(latchkey_data_dir, workdir, db_url=db_url, config_toml=server_config, rust_log=server_log_level)
    lk.start()
    yield lk
    lk.stop()
    leaked = lk.leaked_secrets()
    if leaked:
        pytest.fail(
            f"{len(leaked)} secret(s) appeared in the server log {lk.log_path} "
            f"(first chars: {[s[:4] + '…' for s in leaked]})"
        )


@pytest.fixture(scope="module")
def admin(server: Latchkey) -> Cred:
    assert server.admin is not None
    return server.admin


@pytest.fixture(scope="module")
def cp(server: Latchkey) -> Any:
    """bedrock-agentcore-control client with the admin credential."""
    return server.cp()


@pytest.fixture(scope="module")
def dp(server: Latchkey) -> Any:
    """bedrock-agentcore client with the admin credential."""
    return server.dp()
