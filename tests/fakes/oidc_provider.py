"""Fake OpenID Connect provider: discovery, authorisation code with PKCE (S256), token, JWKS, userinfo.

A real HTTP server on 127.0.0.1 that checks what a strict identity provider checks:
- `GET /authorize`: a known `client_id`, a registered `redirect_uri` (else a 400 page, never a redirect
  to an unregistered address), `response_type=code`, the `openid` scope, a `state`, and a PKCE
  `code_challenge` with `code_challenge_method=S256` (required unless `require_pkce=False`). The user
  is taken as signed in and consenting: it redirects back at once with `code` and `state`.
- `POST /token`: client authentication (`client_secret_basic` or `client_secret_post`), a code that
  is known, unexpired and unused, the same `redirect_uri`, and a `code_verifier` whose S256 digest is
  the challenge; any mismatch is `400 {"error": "invalid_grant"}`. It answers with an access token and
  an RS256-signed id_token (kid in the header, key in `/jwks`).
- `GET /userinfo`: the claims, for a valid bearer access token.

Claims come from `user` (`sub`, `email`, `email_verified`, `name`, ...), set before each sign-in with
`sign_in_as`. Every authorisation and token request is kept in `authorize_requests` and
`token_requests` for the tests to inspect.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.fakes.base import ThreadedServer, serve_forever

CODE_TTL_SECONDS = 60
_VERIFIER_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of `verifier` (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    scope: str
    claims: dict[str, Any]
    code_challenge: str | None
    nonce: str | None
    issued_at: float
    used: bool = False


@dataclass
class TokenAttempt:
    """One `POST /token`: what the client sent and what the fake answered."""

    form: dict[str, str]
    client_id: str | None
    auth_method: str | None
    code_verifier: str | None
    status: int
    error: str | None


class FakeOIDC(ThreadedServer):
    """The provider, with one registered client (`client_id`, `client_secret`, `redirect_uris`)."""

    def __init__(
        self,
        *,
        client_id: str = "switchyard-test",
        client_secret: str | None = None,
        redirect_uris: set[str] | None = None,
        require_pkce: bool = True,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.redirect_uris = set(redirect_uris or ())
        self.require_pkce = require_pkce
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[TokenAttempt] = []
        self.userinfo_requests = 0
        self.kid = secrets.token_hex(8)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._grants: dict[str, Grant] = {}
        self._access_tokens: dict[str, dict[str, Any]] = {}
        self.user: dict[str, Any] = {}
        self.sign_in_as(sub="user-1", email="person@idp.test", email_verified=True, name="Pat Person")

    # --- what a test controls ------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self.base_url

    def sign_in_as(self, **claims: Any) -> None:
        """The identity the next authorisation grants (the person signed in at the provider)."""
        self.user = claims

    def allow_redirect_uri(self, uri: str) -> None:
        self.redirect_uris.add(uri)

    def public_jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    # --- the server ------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/userinfo", self._userinfo)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        base = self.issuer
        return web.json_response(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": ["sub", "email", "email_verified", "name", "given_name", "family_name"],
            }
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.authorize_requests.append(q)
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id:
            return web.Response(status=400, text="unknown client_id")
        if redirect_uri not in self.redirect_uris:
            # Never redirect to an address the client did not register (RFC 6749 section 4.1.2.1).
            return web.Response(status=400, text=f"redirect_uri not registered: {redirect_uri}")
        state = q.get("state")

        def back(**params: str) -> web.Response:
            if state is not None:
                params["state"] = state
            raise web.HTTPFound(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(params)}")

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in q.get("scope", "").split():
            return back(error="invalid_scope", error_description="openid scope required")
        if not state:
            return back(error="invalid_request", error_description="state required")
        challenge = q.get("code_challenge")
        method = q.get("code_challenge_method")
        if challenge is None and self.require_pkce:
            return back(error="invalid_request", error_description="code_challenge required")
        if challenge is not None and method != "S256":
            return back(error="invalid_request", error_description="code_challenge_method must be S256")
        code = secrets.token_urlsafe(24)
        self._grants[code] = Grant(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            scope=q.get("scope", ""),
            claims=dict(self.user),
            code_challenge=challenge,
            nonce=q.get("nonce"),
            issued_at=time.monotonic(),
        )
        return back(code=code)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        client_id, secret, auth_method = _client_credentials(request, form)
        verifier = form.get("code_verifier")

        def answer(status: int, body: dict[str, Any], error: str | None = None) -> web.Response:
            self.token_requests.append(
                TokenAttempt(
                    form=form,
                    client_id=client_id,
                    auth_method=auth_method,
                    code_verifier=verifier,
                    status=status,
                    error=error,
                )
            )
            return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

        def fail(error: str, description: str, status: int = 400) -> web.Response:
            return answer(status, {"error": error, "error_description": description}, error)

        if client_id != self.client_id or secret != self.client_secret:
            return fail("invalid_client", "client authentication failed", 401)
        if form.get("grant_type") != "authorization_code":
            return fail("unsupported_grant_type", "only authorization_code")
        grant = self._grants.get(form.get("code", ""))
        if grant is None or grant.used or time.monotonic() - grant.issued_at > CODE_TTL_SECONDS:
            return fail("invalid_grant", "unknown, used or expired code")
        grant.used = True  # single use, even when the rest of the request fails
        if form.get("redirect_uri") != grant.redirect_uri:
            return fail("invalid_grant", "redirect_uri does not match the authorisation request")
        if grant.code_challenge is not None:
            if not verifier or not 43 <= len(verifier) <= 128 or set(verifier) - _VERIFIER_CHARS:
                return fail("invalid_grant", "code_verifier missing or malformed")
            if s256(verifier) != grant.code_challenge:
                return fail("invalid_grant", "code_verifier does not match the code_challenge")
        elif verifier is not None:
            return fail("invalid_grant", "code_verifier sent for a grant without a challenge")
        access_token = secrets.token_urlsafe(32)
        self._access_tokens[access_token] = grant.claims
        return answer(
            200,
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": grant.scope,
                "id_token": self.id_token(grant.claims, nonce=grant.nonce),
            },
        )

    def id_token(
        self, claims: dict[str, Any], *, nonce: str | None = None, audience: str | None = None
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience or self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            **claims,
        }
        if nonce:
            payload["nonce"] = nonce
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid})

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.public_jwk()]})

    async def _userinfo(self, request: web.Request) -> web.Response:
        self.userinfo_requests += 1
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        claims = self._access_tokens.get(token)
        if claims is None:
            return web.json_response(
                {"error": "invalid_token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return web.json_response(claims)


def _client_credentials(
    request: web.Request, form: dict[str, str]
) -> tuple[str | None, str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except ValueError:
            return None, None, "client_secret_basic"
        user, _, password = decoded.partition(":")
        # RFC 6749 section 2.3.1: both parts are form-urlencoded before joining.
        return unquote(user.replace("+", " ")), unquote(password.replace("+", " ")), "client_secret_basic"
    if "client_secret" in form:
        return form.get("client_id"), form["client_secret"], "client_secret_post"
    return form.get("client_id"), None, None


if __name__ == "__main__":
    # Standalone, to try single sign-on by hand: `python -m tests.fakes.oidc_provider PORT CALLBACK_URL`;
    # the client is switchyard-test / dev-secret and every sign-in is the default user.
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    serve_forever(FakeOIDC(client_secret="dev-secret", redirect_uris=set(sys.argv[2:3]), port=port))
