"""Fixtures for OAuth flow tests: a third-party authorization server (oidc-provider) and a
resource API in front of it. Imported by conftest.py.

    authz_server            function-scoped OidcProvider, fresh keys, refresh-token rotation off
    authz_server_rotating   the same with rotation on (reusing a consumed refresh token →
                            invalid_grant and the whole grant revoked)
    resource_api            factory: resource_api(server=None, *, audience=None) → a started
                            ResourceApi bound to `server` (default: this test's authz_server);
                            every API it made is stopped after the test

Register Latchkey's callback URL with `authz_server.add_client(...)` once the credential
provider exists in Latchkey (its redirect_uri is known only then).
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from oidc import OidcProvider, ResourceApi


def _provider(tmp_path_factory: pytest.TempPathFactory, name: str, *, rotate: bool) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp(name), rotate_refresh_tokens=rotate)
    provider.start(new_keys=True)
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def authz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A third-party OAuth authorization server, refresh-token rotation off."""
    yield from _provider(tmp_path_factory, "authz", rotate=False)


@pytest.fixture
def authz_server_rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A third-party OAuth authorization server that rotates refresh tokens."""
    yield from _provider(tmp_path_factory, "authz-rotating", rotate=True)


ResourceApiFactory = Callable[..., ResourceApi]


@pytest.fixture
def resource_api(request: pytest.FixtureRequest) -> Iterator[ResourceApiFactory]:
    """`resource_api(server=None, *, audience=None)`: a started ResourceApi in front of
    `server` (default: the test's `authz_server`)."""
    started: list[ResourceApi] = []

    def make(server: OidcProvider | None = None, *, audience: str | list[str] | None = None) -> ResourceApi:
        if server is None:
            server = request.getfixturevalue("authz_server")
        api = ResourceApi(server, audience=audience).start()
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop()
