"""JWT roles on the admin and results routes: 401 with a challenge, 403 for the wrong role."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from query_api.auth import AuthConfigError, TokenVerifier, mint_token
from shared.settings import Settings
from tests.conftest import TEST_SECRET
from tests.helpers import serve_client

ADMIN_ONLY = [("GET", "/api/admin/experiments"), ("GET", "/api/admin/settings"), ("PUT", "/api/admin/settings")]
RESULTS = ("GET", "/api/v1/experiments/results")


def _token(claims: dict, secret: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _claims(**overrides) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return {"sub": "alice", "role": "admin", "exp": now + dt.timedelta(minutes=5)} | overrides


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


def _call(client, method: str, path: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.request(method, path, headers=headers, json={"experiments_enabled": True} if method == "PUT" else None)


BAD_TOKENS = {
    "missing": None,
    "garbage": "not.a.jwt",
    "wrong secret": _token(_claims(), secret="another-secret-" + "y" * 40),
    "expired": _token(_claims(exp=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5))),
    "no exp": _token({"sub": "alice", "role": "admin"}),
    "no sub": _token({"role": "admin", "exp": _claims()["exp"]}),
    "no role": _token({"sub": "alice", "exp": _claims()["exp"]}),
    "alg none": jwt.encode(_claims(), None, algorithm="none"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
@pytest.mark.parametrize(("method", "path"), [*ADMIN_ONLY, RESULTS])
def test_bad_tokens_are_401_with_challenge(client, case, method, path):
    response = _call(client, method, path, BAD_TOKENS[case])
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_non_bearer_scheme_is_401(client):
    response = client.get("/api/admin/settings", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
def test_analyst_cannot_use_admin_routes(client, method, path):
    assert _call(client, method, path, _token(_claims(role="analyst"))).status_code == 403


def test_roles_on_results(client):
    assert _call(client, *RESULTS, _token(_claims(role="analyst"))).status_code == 200
    assert _call(client, *RESULTS, _token(_claims(role="admin"))).status_code == 200
    assert _call(client, *RESULTS, _token(_claims(role="viewer"))).status_code == 403


def test_public_routes_need_no_token(client):
    assert client.get("/api/experiments").status_code == 200


def test_issuer_and_audience_are_checked_when_configured():
    settings = Settings(jwt_secret=TEST_SECRET, jwt_issuer="https://id.example", jwt_audience="abacus")
    verifier = TokenVerifier(settings)
    good = _token(_claims(iss="https://id.example", aud="abacus"))
    assert verifier.verify(good).sub == "alice"
    from litestar.exceptions import NotAuthorizedException

    for bad in (
        _token(_claims(iss="https://other", aud="abacus")),
        _token(_claims(iss="https://id.example", aud="x")),
        _token(_claims()),
    ):
        with pytest.raises(NotAuthorizedException):
            verifier.verify(bad)


def test_leeway_tolerates_small_clock_skew():
    verifier = TokenVerifier(Settings(jwt_secret=TEST_SECRET, jwt_leeway_s=30))
    just_expired = _token(_claims(exp=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)))
    assert verifier.verify(just_expired).role == "admin"


def test_rs256_public_key_and_hs256_confusion_is_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    )
    verifier = TokenVerifier(Settings(jwt_algorithm="RS256", jwt_public_key=public_pem))
    assert verifier.verify(jwt.encode(_claims(), private, algorithm="RS256")).sub == "alice"
    from litestar.exceptions import NotAuthorizedException

    with pytest.raises(NotAuthorizedException):
        verifier.verify(_token(_claims()))  # an HS256 token must not pass an RS256-pinned verifier


@pytest.mark.parametrize("secret", [None, "", "short-secret"])
def test_weak_or_missing_secret_is_refused(secret):
    with pytest.raises(AuthConfigError):
        TokenVerifier(Settings(jwt_secret=secret))


def test_minted_token_round_trips():
    token = mint_token(TEST_SECRET, "carol", "analyst", dt.timedelta(hours=1))
    principal = TokenVerifier(Settings(jwt_secret=TEST_SECRET)).verify(token)
    assert (principal.sub, principal.role) == ("carol", "analyst")
    with pytest.raises(ValueError):
        mint_token(TEST_SECRET, "carol", "superuser", dt.timedelta(hours=1))
