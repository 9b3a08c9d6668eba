"""Who may publish what (docs/spec.md §2, §3.7, §5): tokens, the keyring, bans, the policy.

Pure and light: nothing here imports trio's I/O, a web stack or httpx, so
`rtmp-ingest token ...` starts fast. The publish hook's HTTP client is
`rtmp_ingest.auth.hooks` (httpx), imported only by the server.

    tokens     token format, minting, verification, linear stream patterns
    keyring    the secret + revocations + issued-token log of a data directory
    bans       (stream, sourceId, client IP) bans from the kick API's ban_s
    policy     decide(attempt) -> Permit | Refusal, the one publish policy
    authorize  Authorizer: the policy, then the hook, for every protocol driver
    safety     start-up check: token mode must not leave the HTTP API open
"""

from rtmp_ingest.auth.authorize import Authorizer, Hook, HookAnswer, Outcome, PlayAttempt
from rtmp_ingest.auth.bans import Ban, BanList
from rtmp_ingest.auth.keyring import IssuedToken, Keyring, KeyringError, load_or_create_secret
from rtmp_ingest.auth.policy import (
    Permit,
    Policy,
    PolicySettings,
    PublishAttempt,
    Refusal,
    RefusalCode,
    decide,
    refusal_from_bundle,
)
from rtmp_ingest.auth.safety import exposure_problems, is_loopback_listen
from rtmp_ingest.auth.tokens import (
    TokenClaims,
    TokenClaimsError,
    TokenError,
    TokenFault,
    claims_from_json,
)

__all__ = [
    "Authorizer",
    "Ban",
    "BanList",
    "Hook",
    "HookAnswer",
    "IssuedToken",
    "Keyring",
    "KeyringError",
    "Outcome",
    "Permit",
    "PlayAttempt",
    "Policy",
    "PolicySettings",
    "PublishAttempt",
    "Refusal",
    "RefusalCode",
    "TokenClaims",
    "TokenClaimsError",
    "TokenError",
    "TokenFault",
    "claims_from_json",
    "decide",
    "exposure_problems",
    "is_loopback_listen",
    "load_or_create_secret",
    "refusal_from_bundle",
]
