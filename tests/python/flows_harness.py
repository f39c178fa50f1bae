"""Drive Latchkey's 3-legged OAuth flow headlessly, as a browser would, over HTTP.

The browser is a `requests.Session` (its own cookie jar, so two sessions are two
browsers). `Browser.consent()` follows Latchkey's authorize redirect to the provider
(`oidc-provider`), logs in and consents through its development interaction forms, lets
the provider redirect to Latchkey's callback and stops at Latchkey's redirect to the
return URL (which nothing listens on). Every hop is kept for assertions.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlparse

import requests

from oidc import ConsentResult, Hop, origin, running_provider


class Browser:
    """One browser: a cookie jar that follows redirects between Latchkey and the provider."""

    def __init__(self, latchkey_url: str, provider_issuer: str) -> None:
        self.s = requests.Session()
        self.latchkey = origin(latchkey_url)
        self.provider = origin(provider_issuer)

    def _step(self, result: ConsentResult, method: str, url: str, data: dict[str, str] | None = None) -> requests.Response:
        r = self.s.request(method, url, data=data, allow_redirects=False, timeout=15)
        result.hops.append(Hop(method, url, r.status_code))
        result.response = r
        return r

    def consent(
        self,
        authorization_url: str,
        user: str = "alice",
        *,
        approve: bool = True,
        stop_at_callback: bool = False,
    ) -> ConsentResult:
        """Open the authorization URL and go through login and consent at the provider.

        With `stop_at_callback`, stop before requesting Latchkey's callback and return its
        URL (with `code` and `state`) as `final_url`; the tests replay or tamper with it.
        """
        result = ConsentResult()
        r = self._step(result, "GET", authorization_url)
        for _ in range(20):
            if r.status_code not in (301, 302, 303, 307, 308):
                return result
            location = urljoin(r.url, r.headers["Location"])
            at = origin(location)
            if at not in (self.latchkey, self.provider):
                result.final_url = location
                return result
            path = urlparse(location).path
            if stop_at_callback and at == self.latchkey and "/identities/oauth2/callback/" in path:
                result.final_url = location
                return result
            if at == self.provider and "/interaction/" in path and not path.endswith("/abort"):
                page = self._step(result, "GET", location)
                if page.status_code != 200:
                    return result
                if not approve:
                    r = self._step(result, "GET", location.rstrip("/") + "/abort")
                    continue
                if 'name="prompt" value="login"' in page.text:
                    form = {"prompt": "login", "login": user, "password": "any"}
                else:
                    form = {"prompt": "consent"}
                r = self._step(result, "POST", location, data=form)
            else:
                r = self._step(result, "GET", location)
        raise RuntimeError(f"too many redirects: {[h.url for h in result.hops]}")

    def get(self, url: str) -> requests.Response:
        return self.s.get(url, allow_redirects=False, timeout=15)


def session_id_of(uri: str) -> str:
    return uri.split("urn:ietf:params:oauth:request_uri:", 1)[1]


def userinfo(issuer_metadata: dict[str, Any], token: str) -> requests.Response:
    """Ask the provider who a token belongs to (proves the token is real and whose it is)."""
    return requests.get(
        issuer_metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def create_custom_provider(server: Any, cp: Any, authz: Any, prefix: str = "prov") -> tuple[str, str]:
    """A `CustomOauth2` credential provider for the oidc-provider `authz` (by discovery);
    returns (name, callbackUrl). The client secret is remembered as a secret of `server`."""
    import uuid

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    server.remember_secret(authz.client_secret)
    cp.create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": authz.discovery_url},
                "clientId": authz.client_id,
                "clientSecret": authz.client_secret,
            }
        },
    )
    return name, cp.get_oauth2_credential_provider(name=name)["callbackUrl"]
