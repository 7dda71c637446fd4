"""Bearer-token auth for the admin and results routes.

The algorithm is pinned by configuration, never taken from the token's header, so an unsigned
(``alg: none``) token or an HS256 token forged with a public key is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from shared.settings import Settings

ROLES = ("admin", "analyst")
MIN_SECRET_BYTES = 32
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="abacus"'}


class AuthConfigError(ValueError):
    """The JWT settings cannot verify tokens; services refuse to start with this message."""


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_s
        self._jwks = None
        if self.algorithm == "HS256":
            self._key: object = check_secret(settings.jwt_secret)
        elif self.algorithm in ("RS256", "ES256"):
            if settings.jwt_jwks_url:
                self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True)
                self._key = None
            elif settings.jwt_public_key:
                self._key = _read_key(settings.jwt_public_key)
            else:
                raise AuthConfigError(f"{self.algorithm} needs ABACUS_JWT_PUBLIC_KEY or ABACUS_JWT_JWKS_URL")
        else:
            raise AuthConfigError(f"ABACUS_JWT_ALGORITHM must be HS256, RS256 or ES256, not {self.algorithm!r}")

    def verify(self, token: str) -> Principal:
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[self.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "role"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise NotAuthorizedException(f"Invalid token: {exc}", headers=_CHALLENGE) from None
        # PyJWT takes a numeric string such as "exp": "1999999999"; RFC 7519 says NumericDate.
        if any(isinstance(claims.get(name), (str, bool)) for name in ("exp", "nbf", "iat")):
            raise NotAuthorizedException("Invalid token: exp, nbf and iat must be numbers", headers=_CHALLENGE)
        role, sub = claims.get("role"), claims.get("sub")
        if not isinstance(role, str) or not isinstance(sub, str) or not sub:
            raise NotAuthorizedException("Invalid token: sub and role must be strings", headers=_CHALLENGE)
        return Principal(sub=sub, role=role)


def check_secret(secret: str | None) -> str:
    if not secret:
        raise AuthConfigError("ABACUS_JWT_SECRET is not set")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise AuthConfigError(f"ABACUS_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def _read_key(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text()


def mint_token(
    secret: str, sub: str, role: str, ttl: dt.timedelta, issuer: str | None = None, audience: str | None = None
) -> str:
    """An HS256 token the query API accepts: with ``iss``/``aud`` when the API requires them."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = dt.datetime.now(dt.timezone.utc)
    claims: dict[str, object] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, check_secret(secret), algorithm="HS256")


def principal(connection: ASGIConnection) -> Principal:
    cached = connection.scope.get("abacus_principal")  # type: ignore[typeddict-item]
    if cached is not None:
        return cached
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("Missing bearer token", headers=_CHALLENGE)
    verifier: TokenVerifier = connection.app.state.token_verifier
    found = verifier.verify(token.strip())
    connection.scope["abacus_principal"] = found  # type: ignore[typeddict-unknown-key]
    return found


def requires_roles(*roles: str):
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if principal(connection).role not in roles:
            raise PermissionDeniedException(f"This needs the role {' or '.join(roles)}")

    guard.__name__ = f"requires_{'_or_'.join(roles)}"
    return guard


requires_admin = requires_roles("admin")
requires_analyst = requires_roles("admin", "analyst")
