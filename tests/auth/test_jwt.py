"""JWT verification on its own: keys from a PEM (text or file), a JWKS served over loopback
HTTP or read from a file (cached, fetched again on an unknown kid, never more often than
allowed), the algorithms a key allows, scopes from `scope`/`scp`, the leeway."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from crew_platform.auth.jwt_tokens import JwksKeys, JwtVerifier
from crew_platform.auth.principal import Scope
from crew_platform.errors import ServiceUnavailable, Unauthorized
from crew_platform.settings import Settings
from tests.auth.support import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    JwksServer,
    claims,
    ec_key,
    hs_with_public_key,
    jwk_of,
    public_pem,
    rs256,
    rsa_key,
    unsigned,
)


def settings(**values: Any) -> Settings:
    return Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        auth_mode="jwt",
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        **values,
    )


async def reason_of(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as refused:
        await verifier.verify(token)
    assert not token or token not in refused.value.message
    return str(refused.value.details["reason"])


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_hs256_with_the_secret_and_nothing_else() -> None:
    verifier = JwtVerifier(settings(jwt_secret=HS_SECRET))
    principal = await verifier.verify(jwt.encode(claims("ann"), HS_SECRET, algorithm="HS256"))
    assert (principal.subject, principal.via) == ("ann", "jwt")
    assert principal.scopes == {Scope.READ, Scope.WRITE, Scope.EXECUTE}
    assert await reason_of(verifier, rs256(claims())) == "algorithm"
    other = jwt.encode(claims(), "another-secret-of-32-characters-at-least", algorithm="HS256")
    assert await reason_of(verifier, other) == "signature"
    hs512 = jwt.encode(claims(), HS_SECRET, algorithm="HS512")
    assert await reason_of(verifier, hs512) == "algorithm"
    assert await reason_of(verifier, unsigned(claims())) == "algorithm"


async def test_rsa_public_key_from_pem_text_or_file(tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    path.write_text(public_pem(rsa_key()))
    one_line = public_pem(rsa_key()).replace("\n", "\\n")  # as a .env file holds it
    for value in (public_pem(rsa_key()), str(path), f"  {one_line}  ", f" {path}\n"):
        verifier = JwtVerifier(settings(jwt_public_key=value))
        assert (await verifier.verify(rs256(claims("ann")))).subject == "ann"
        confused = hs_with_public_key(claims(), public_pem(rsa_key()))
        assert await reason_of(verifier, confused) == "algorithm"
        rs384 = jwt.encode(claims("ann"), rsa_key(), algorithm="RS384")
        assert (await verifier.verify(rs384)).subject == "ann"


async def test_ec_key_takes_es256_only() -> None:
    verifier = JwtVerifier(settings(jwt_public_key=public_pem(ec_key())))
    token = jwt.encode(claims("ann"), ec_key(), algorithm="ES256")
    assert (await verifier.verify(token)).subject == "ann"
    assert await reason_of(verifier, rs256(claims())) == "algorithm"
    other = jwt.encode(claims(), ec_key("other"), algorithm="ES256")
    assert await reason_of(verifier, other) == "signature"


async def test_claims_exp_nbf_iss_aud_and_the_leeway() -> None:
    verifier = JwtVerifier(settings(jwt_secret=HS_SECRET, jwt_leeway_seconds=30))
    now = int(time.time())

    def hs(**extra: Any) -> str:
        return jwt.encode(claims(**extra), HS_SECRET, algorithm="HS256")

    assert (await verifier.verify(hs(exp=now - 10))).subject == "alice"  # within the leeway
    assert (await verifier.verify(hs(nbf=now + 10))).subject == "alice"
    assert await reason_of(verifier, hs(exp=now - 60)) == "expired"
    assert await reason_of(verifier, hs(nbf=now + 60)) == "not_yet_valid"
    assert await reason_of(verifier, hs(exp=None)) == "missing_claim"
    assert await reason_of(verifier, hs(sub=None)) == "missing_claim"
    assert await reason_of(verifier, hs(sub="x" * 201)) == "subject"
    assert await reason_of(verifier, hs(iss="https://other.test/")) == "issuer"
    assert await reason_of(verifier, hs(iss=None)) == "missing_claim"
    assert await reason_of(verifier, hs(aud="other")) == "audience"
    assert await reason_of(verifier, "a.b") == "malformed"
    assert await reason_of(verifier, "") == "malformed"


async def test_without_issuer_and_audience_settings_those_claims_are_not_checked() -> None:
    verifier = JwtVerifier(
        Settings(database_url="sqlite://", auth_mode="jwt", jwt_secret=HS_SECRET)
    )
    token = jwt.encode(claims(aud="anything", iss="anyone"), HS_SECRET, algorithm="HS256")
    assert (await verifier.verify(token)).subject == "alice"


@pytest.mark.parametrize(
    ("token_claims", "scopes"),
    [
        ({"scope": "read write"}, {Scope.READ, Scope.WRITE}),
        ({"scope": None, "scp": ["execute", "admin"]}, {Scope.EXECUTE, Scope.ADMIN}),
        ({"scope": None, "scp": "read"}, {Scope.READ}),
        ({"scope": "read unknown crew:write"}, {Scope.READ}),
        ({"scope": None}, set()),
        ({"scope": None, "scp": [1, "write", None]}, {Scope.WRITE}),
    ],
)
async def test_scopes_from_scope_or_scp(token_claims: dict[str, Any], scopes: set[Scope]) -> None:
    verifier = JwtVerifier(settings(jwt_secret=HS_SECRET))
    payload = {k: v for k, v in {**claims(), **token_claims}.items() if v is not None}
    token = jwt.encode(payload, HS_SECRET, algorithm="HS256")
    assert (await verifier.verify(token)).scopes == scopes


async def test_jwks_over_http_rotates_on_an_unknown_kid() -> None:
    with JwksServer({"keys": [jwk_of(rsa_key("one"), "one")]}) as server:
        verifier = JwtVerifier(
            settings(jwt_jwks_url=server.url), JwksKeys(server.url, min_refresh_seconds=0)
        )
        assert (await verifier.verify(rs256(claims("ann"), rsa_key("one"), "one"))).subject
        assert server.requests == 1
        await verifier.verify(rs256(claims("ann"), rsa_key("one"), "one"))
        assert server.requests == 1  # cached
        server.document = {"keys": [jwk_of(rsa_key("two"), "two"), jwk_of(ec_key(), "ec")]}
        rotated = rs256(claims("ann"), rsa_key("two"), "two")
        assert (await verifier.verify(rotated)).subject == "ann"
        assert server.requests == 2
        ec_token = jwt.encode(claims("ann"), ec_key(), algorithm="ES256", headers={"kid": "ec"})
        assert (await verifier.verify(ec_token)).subject == "ann"
        retired = rs256(claims("ann", jti="not seen before"), rsa_key("one"), "one")
        assert await reason_of(verifier, retired) == "unknown_key"


async def test_unknown_kids_fetch_the_jwks_at_most_once_per_interval() -> None:
    with JwksServer({"keys": [jwk_of(rsa_key("one"), "one")]}) as server:
        verifier = JwtVerifier(
            settings(jwt_jwks_url=server.url), JwksKeys(server.url, min_refresh_seconds=3600)
        )
        await verifier.verify(rs256(claims(), rsa_key("one"), "one"))
        for made_up in range(20):
            token = rs256(claims(), rsa_key("attacker"), f"kid-{made_up}")
            assert await reason_of(verifier, token) == "unknown_key"
        assert server.requests == 1


async def test_jwks_symmetric_and_encryption_keys_are_ignored() -> None:
    secret = b"shared-secret-in-a-jwks-32-bytes-long"
    oct_key = json.loads(jwt.algorithms.HMACAlgorithm.to_jwk(secret))
    document = {
        "keys": [
            {**oct_key, "kid": "oct"},
            {**jwk_of(rsa_key("enc"), "enc"), "use": "enc"},
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            "not an object",
            jwk_of(rsa_key("good"), "good"),
        ]
    }
    with JwksServer(document) as server:
        verifier = JwtVerifier(
            settings(jwt_jwks_url=server.url), JwksKeys(server.url, min_refresh_seconds=0)
        )
        hs = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "oct"})
        assert await reason_of(verifier, hs) == "unknown_key"
        enc = rs256(claims(), rsa_key("enc"), "enc")
        assert await reason_of(verifier, enc) == "unknown_key"
        # the entries it skips do not cost the key set its good keys
        good = rs256(claims("ann"), rsa_key("good"), "good")
        assert (await verifier.verify(good)).subject == "ann"


async def test_jwks_from_a_file_and_an_unreachable_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk_of(rsa_key("one"), "one")]}))
    verifier = JwtVerifier(settings(jwt_jwks_url=str(path)))
    assert (await verifier.verify(rs256(claims("ann"), rsa_key("one"), "one"))).subject == "ann"
    down = JwtVerifier(settings(jwt_jwks_url="http://user:hunter22@127.0.0.1:9/jwks.json"))
    with pytest.raises(ServiceUnavailable) as unavailable:  # not the token's fault: no 401
        await down.verify(rs256(claims(), rsa_key("one"), "one"))
    assert "hunter22" not in unavailable.value.message
    assert "could not be read" in caplog.text
    assert "hunter22" not in caplog.text


def test_settings_refuse_what_cannot_work() -> None:
    for values in (
        {"auth_mode": "jwt"},
        {"auth_mode": "api_key"},
        {"auth_mode": "jwt", "jwt_secret": "short"},
        {"auth_mode": "none", "api_key_secret": "short"},
        {"auth_mode": "sometimes"},
        {"auth_mode": "jwt", "jwt_jwks_url": "/nonexistent/jwks.json"},
        {"auth_mode": "jwt", "jwt_jwks_url": "file:///nonexistent/jwks.json"},
    ):
        with pytest.raises(ValueError):
            Settings(database_url="sqlite://", **values)


async def test_a_verified_token_is_remembered_but_never_past_its_exp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crew_platform.auth import jwt_tokens

    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt_tokens.jwt, "decode", counting_decode)
    verifier = JwtVerifier(settings(jwt_secret=HS_SECRET, jwt_leeway_seconds=0))
    now = time.time()
    token = jwt.encode(claims("ann", exp=int(now) + 30), HS_SECRET, algorithm="HS256")
    other = jwt.encode(claims("bob"), HS_SECRET, algorithm="HS256")
    clock = [now]  # `time` is the module PyJWT's clock does not read (it uses datetime)
    monkeypatch.setattr(jwt_tokens.time, "time", lambda: clock[0])
    for _ in range(3):
        assert (await verifier.verify(token)).subject == "ann"
    assert len(decoded) == 1
    clock[0] = now + 31  # past exp: verified again (and PyJWT's own clock still says valid)
    assert (await verifier.verify(token)).subject == "ann"
    assert len(decoded) == 2
    assert (await verifier.verify(other)).subject == "bob"  # one entry per token
    assert await reason_of(verifier, token[:-4] + "AAAA") == "signature"
