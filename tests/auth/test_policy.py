"""The publish policy, table-driven and without sockets (docs/style.md §15; docs/spec.md §2, §3.7, §5)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.auth import tokens
from rtmp_ingest.auth.bans import BanList
from rtmp_ingest.auth.keyring import Keyring
from rtmp_ingest.auth.policy import (
    MAX_SHOWN_CHARS,
    RTMP_BAD_NAME,
    RTMP_REJECTED,
    Permit,
    Policy,
    PolicySettings,
    PublishAttempt,
    Refusal,
    RefusalCode,
    decide,
    refusal_from_bundle,
    split_remote,
)
from rtmp_ingest.auth.tokens import TokenClaims
from rtmp_ingest.bundle import BundleConfig, Refused, Registry
from rtmp_ingest.bundle import RefusalCode as BundleRefusalCode

NOW = 1_800_000_000.0
SECRET = "policy-test-secret-0123456789"


@attrs.frozen
class App:
    multisource: bool = True
    record: bool = False


APPS = {"*": App(), "single": App(multisource=False), "rec": App(record=True)}
KEYRING = Keyring(SECRET.encode(), data_dir=None, revoked={"gone": NOW - 10})


def mint(token_id="tok", streams=("live/*", "rec/*", "single/*"), **kwargs):
    return tokens.mint(TokenClaims(token_id=token_id, streams=streams, **kwargs), KEYRING.secret)


TOKENS = {
    "plain": mint(),
    "multi": mint(multisource=True),
    "gone": mint("gone", multisource=True),
    "expired": mint(multisource=True, expires_at=NOW - 1),
    "sources": mint(multisource=True, source_ids=("cam1", "")),
    "lan": mint(multisource=True, networks=("10.0.0.0/8",)),
    "no-record": mint(multisource=True, record=False),
    "forged": mint(multisource=True)[:-3] + "AAA",
    "other-secret": tokens.mint(
        TokenClaims(token_id="x", streams=("live/*",)), b"another-secret-0123456789"
    ),
}


def attempt(path="live/show", *, token=None, remote="10.1.2.3:50000", protocol="rtmp", **query):
    return PublishAttempt.from_query(
        protocol=protocol,
        stream_path=path,
        query=query,
        remote=remote,
        token=TOKENS.get(token, token) if token else None,
    )


class CountingVerifier:
    """The keyring, counting how often a token reached verification."""

    def __init__(self):
        self.calls = 0

    def verify(self, token, **kwargs):
        self.calls += 1
        return KEYRING.verify(token, **kwargs)


#: (mode, attempt, expected code or None for a permit)
TABLE = [
    # names and priority, any mode
    ("open", attempt("live/show"), None),
    ("open", attempt("live/show", sourceId="cam1", priority="5"), None),
    ("open", attempt("live/show", priority="-7"), None),
    ("open", attempt("live/show", priority=""), None),
    ("open", attempt("live/a/b/c"), None),
    ("open", attempt("live"), RefusalCode.NO_STREAM_NAME),
    ("open", attempt(""), RefusalCode.NO_STREAM_NAME),
    ("open", attempt("live/"), RefusalCode.NO_STREAM_NAME),
    ("open", attempt("live/../admin"), RefusalCode.INVALID_STREAM_PATH),
    ("open", attempt("live/./x"), RefusalCode.INVALID_STREAM_PATH),
    ("open", attempt("live/" + "n" * 1020), RefusalCode.INVALID_STREAM_PATH),
    ("open", attempt("live/" + "é" * 510), RefusalCode.INVALID_STREAM_PATH),  #: bytes, not chars
    ("open", attempt("live/x", sourceId="s" * 129), RefusalCode.INVALID_SOURCE_ID),
    ("open", attempt("live/x", priority="high"), RefusalCode.BAD_PRIORITY),
    ("open", attempt("live/x", priority="1_0"), RefusalCode.BAD_PRIORITY),
    ("open", attempt("live/x", priority=" 1"), RefusalCode.BAD_PRIORITY),
    ("open", attempt("live/x", priority="2147483648"), RefusalCode.BAD_PRIORITY),
    ("open", attempt("live/x", priority="9" * 5000), RefusalCode.BAD_PRIORITY),
    # the app's multisource gate
    ("open", attempt("single/x"), None),
    ("open", attempt("single/x", sourceId="cam1"), RefusalCode.MULTISOURCE_NOT_PERMITTED),
    # token mode
    ("token", attempt("live/x"), RefusalCode.NO_TOKEN),
    ("token", attempt("live/x", token="plain"), None),
    (
        "token",
        attempt("live/x", token="plain", sourceId="cam1"),
        RefusalCode.MULTISOURCE_NOT_PERMITTED,
    ),
    ("token", attempt("live/x", token="multi", sourceId="cam1"), None),
    (
        "token",
        attempt("single/x", token="multi", sourceId="c"),
        RefusalCode.MULTISOURCE_NOT_PERMITTED,
    ),
    ("token", attempt("other/x", token="multi"), RefusalCode.TOKEN_WRONG_STREAM),
    ("token", attempt("live/x", token="forged"), RefusalCode.TOKEN_INVALID),
    ("token", attempt("live/x", token="other-secret"), RefusalCode.TOKEN_INVALID),
    ("token", attempt("live/x", token="rt1.garbage"), RefusalCode.TOKEN_INVALID),
    ("token", attempt("live/x", token="x" * 5000), RefusalCode.TOKEN_INVALID),
    ("token", attempt("live/x", token="expired"), RefusalCode.TOKEN_EXPIRED),
    ("token", attempt("live/x", token="gone"), RefusalCode.TOKEN_REVOKED),
    ("token", attempt("live/x", token="sources", sourceId="cam1"), None),
    ("token", attempt("live/x", token="sources"), None),
    ("token", attempt("live/x", token="sources", sourceId="cam2"), RefusalCode.TOKEN_WRONG_SOURCE),
    ("token", attempt("live/x", token="lan"), None),
    ("token", attempt("live/x", token="lan", remote="[::ffff:10.0.0.9]:1"), None),
    (
        "token",
        attempt("live/x", token="lan", remote="192.0.2.1:1"),
        RefusalCode.TOKEN_WRONG_NETWORK,
    ),
    ("token", attempt("live/x", token="multi", protocol="srt"), None),
    ("token", attempt("live/x", protocol="webrtc"), RefusalCode.NO_TOKEN),
    # bans (live/banned cam1 from 10.1.2.3)
    ("open", attempt("live/banned", sourceId="cam1"), RefusalCode.BANNED),
    ("open", attempt("live/banned", sourceId="cam1", remote="10.1.2.4:1"), None),
    ("open", attempt("live/banned", sourceId="cam2"), None),
    ("token", attempt("live/banned", sourceId="cam1", token="forged"), RefusalCode.BANNED),
]

EXPECTED_STATUS = {
    RefusalCode.NO_STREAM_NAME: (400, RTMP_BAD_NAME),
    RefusalCode.INVALID_STREAM_PATH: (400, RTMP_BAD_NAME),
    RefusalCode.INVALID_SOURCE_ID: (400, RTMP_BAD_NAME),
    RefusalCode.BAD_PRIORITY: (400, RTMP_BAD_NAME),
    RefusalCode.NO_TOKEN: (401, RTMP_REJECTED),
    RefusalCode.TOKEN_INVALID: (401, RTMP_REJECTED),
    RefusalCode.TOKEN_EXPIRED: (401, RTMP_REJECTED),
    RefusalCode.TOKEN_REVOKED: (403, RTMP_REJECTED),
    RefusalCode.TOKEN_WRONG_STREAM: (403, RTMP_REJECTED),
    RefusalCode.TOKEN_WRONG_SOURCE: (403, RTMP_REJECTED),
    RefusalCode.TOKEN_WRONG_NETWORK: (403, RTMP_REJECTED),
    RefusalCode.MULTISOURCE_NOT_PERMITTED: (403, RTMP_REJECTED),
    RefusalCode.BANNED: (429, RTMP_REJECTED),
}


def _policy(mode):
    bans = BanList()
    bans.ban(
        stream_path="live/banned", source_id="cam1", remote_ip="10.1.2.3", duration_s=60, now_s=NOW
    )
    return Policy(PolicySettings(mode=mode, apps=APPS), verifier=KEYRING, bans=bans)


@pytest.mark.parametrize(("mode", "case", "expected"), TABLE)
def test_decide(mode, case, expected):
    decision = _policy(mode).decide(case, now_s=NOW)
    if expected is None:
        assert isinstance(decision, Permit), decision
        request = decision.request
        assert request.stream_path == case.stream_path
        assert request.source_id == case.source_id
        assert request.remote_addr == case.remote
        assert ("token", case.token) not in request.query  #: a credential stays out of the API
        #: and the bundle admits what the policy permitted
        admitted = Registry(BundleConfig()).request_publish(request, now_s=0.0)
        assert not isinstance(admitted, Refused), admitted
        return
    assert isinstance(decision, Refusal), decision
    assert decision.code is expected
    assert (decision.http_status, decision.rtmp_code) == EXPECTED_STATUS[expected]
    assert "\n" not in decision.log_text and len(decision.log_text) < 1000
    assert decision.code.value in decision.log_text
    assert decision.status_text and len(decision.status_text) < 600


def test_a_permit_carries_priority_permissions_record_and_query():
    permit = _policy("token").decide(
        attempt("rec/x", token="sources", sourceId="cam1", priority="3", bitrate="6000"),
        now_s=NOW,
    )
    assert isinstance(permit, Permit)
    assert permit.record is True  #: the app records
    assert permit.claims is not None and permit.claims.source_ids == ("cam1", "")
    request = permit.request
    assert request.priority == 3
    assert request.permissions.app_multisource and request.permissions.token_multisource
    assert request.permissions.allowed_source_ids == frozenset({"cam1", ""})
    assert dict(request.query) == {"sourceId": "cam1", "priority": "3", "bitrate": "6000"}
    no_record = _policy("token").decide(attempt("rec/x", token="no-record"), now_s=NOW)
    assert isinstance(no_record, Permit) and no_record.record is False  #: the claim wins


def test_open_mode_grants_token_multisource_and_the_app_decides():
    permit = _policy("open").decide(attempt("live/x", sourceId="cam1"), now_s=NOW)
    assert isinstance(permit, Permit)
    assert permit.claims is None and permit.record is False
    assert permit.request.permissions.token_multisource
    assert permit.request.permissions.allowed_source_ids is None


def test_lengths_are_checked_before_the_token_is_verified():
    verifier = CountingVerifier()
    settings = PolicySettings(mode="token", apps=APPS)
    for case in (
        attempt("live/" + "x/" * 65536 + "main", token="multi"),  #: a 128 KB name
        attempt("live/x", token="multi", sourceId="s" * 4096),
        attempt("live/x", token="x" * 100_000),
        attempt("live/x", token="multi", priority="oops"),
    ):
        assert isinstance(decide(case, settings=settings, verifier=verifier, now_s=NOW), Refusal)
    assert verifier.calls == 0
    assert isinstance(
        decide(attempt("live/x", token="multi"), settings=settings, verifier=verifier, now_s=NOW),
        Permit,
    )
    assert verifier.calls == 1


def test_a_ban_says_when_it_ends():
    refusal = _policy("open").decide(attempt("live/banned", sourceId="cam1"), now_s=NOW + 15)
    assert isinstance(refusal, Refusal)
    assert refusal.retry_after_s == 45
    assert "45 s" in refusal.status_text


def test_client_text_is_escaped_and_truncated():
    name = "live/evil\nINFO forged line" + "x" * 5000
    refusal = _policy("open").decide(
        attempt(name[:900], sourceId="a\r\nb", priority="\n" * 3), now_s=NOW
    )
    assert isinstance(refusal, Refusal) and refusal.code is RefusalCode.BAD_PRIORITY
    assert "\n" not in refusal.log_text and "\r" not in refusal.log_text
    assert "characters)" in refusal.log_text  #: the 900-character name is cut
    assert len(refusal.log_text) < 2 * MAX_SHOWN_CHARS + 200


def test_token_hints_name_each_protocols_way_of_sending_a_token():
    texts = {
        protocol: _policy("token").decide(attempt(protocol=protocol), now_s=NOW).status_text
        for protocol in ("rtmp", "srt", "webrtc")
    }
    assert "stream key" in texts["rtmp"]
    assert "streamid" in texts["srt"]
    assert "Bearer" in texts["webrtc"]


def test_every_bundle_refusal_maps_to_a_policy_code():
    for code in BundleRefusalCode:
        refusal = refusal_from_bundle(Refused(code, "why " * 400), attempt=attempt())
        assert refusal.code.value == code.value
        assert refusal.code is not RefusalCode.OTHER
        assert len(refusal.status_text) < 600 and code.value in refusal.log_text
    too_many = refusal_from_bundle(Refused(BundleRefusalCode.TOO_MANY_SOURCES, "full"))
    assert (too_many.http_status, too_many.rtmp_code) == (409, RTMP_REJECTED)
    bad = refusal_from_bundle(Refused(BundleRefusalCode.INVALID_SOURCE_ID, "bad"))
    assert (bad.http_status, bad.rtmp_code) == (400, RTMP_BAD_NAME)
    assert bad.srt_reject_code == 1400


def test_srt_reject_codes_follow_the_http_status():
    assert Refusal.of(RefusalCode.NO_TOKEN, "x").srt_reject_code == 1401
    assert Refusal.of(RefusalCode.TOKEN_REVOKED, "x").srt_reject_code == 1403
    assert Refusal.of(RefusalCode.BANNED, "x").srt_reject_code == 1402
    assert Refusal.of(RefusalCode.ALREADY_PUBLISHING, "x").http_status == 409


def test_token_mode_without_a_verifier_is_a_construction_error():
    with pytest.raises(ValueError, match="verifier"):
        Policy(PolicySettings(mode="token"), verifier=None)
    policy = Policy(PolicySettings(mode="open"), verifier=None)
    with pytest.raises(ValueError, match="verifier"):
        policy.configure(PolicySettings(mode="token"))
    with pytest.raises(ValueError, match="mode"):
        PolicySettings(mode="closed")  # type: ignore[arg-type]


def test_configure_swaps_the_app_rules_for_new_publishes():
    policy = _policy("open")
    assert isinstance(policy.decide(attempt("live/x", sourceId="c"), now_s=NOW), Permit)
    policy.configure(PolicySettings(mode="open", apps={"*": App(multisource=False)}))
    refusal = policy.decide(attempt("live/x", sourceId="c"), now_s=NOW)
    assert isinstance(refusal, Refusal)
    assert refusal.code is RefusalCode.MULTISOURCE_NOT_PERMITTED


@pytest.mark.parametrize(
    ("remote", "ip"),
    [
        ("1.2.3.4:5", "1.2.3.4"),
        ("[::1]:5", "::1"),
        ("::1", "::1"),
        ("fe80::1", "fe80::1"),
        ("unix", "unix"),
    ],
)
def test_split_remote(remote, ip):
    assert split_remote(remote) == ip


texts = st.text(max_size=40) | st.sampled_from(["", "live/x", "live/../x", "a/b/c", "live/"])


@given(
    mode=st.sampled_from(["open", "token"]),
    path=texts,
    source_id=st.text(max_size=20),
    priority=st.none() | st.text(max_size=12) | st.integers().map(str),
    token=st.none() | st.sampled_from(sorted(TOKENS)) | st.text(max_size=60),
    remote=st.sampled_from(["10.1.2.3:1", "[::1]:2", "", "garbage", "192.0.2.1:3"]),
    protocol=st.sampled_from(["rtmp", "rtmps", "srt", "webrtc"]),
)
def test_any_attempt_gets_a_permit_or_a_refusal(
    mode, path, source_id, priority, token, remote, protocol
):
    query = {"sourceId": source_id} if source_id else {}
    if priority is not None:
        query["priority"] = priority
    case = attempt(path, token=token, remote=remote, protocol=protocol, **query)
    decision = _policy(mode).decide(case, now_s=NOW)
    if isinstance(decision, Refusal):
        assert "\n" not in decision.log_text and "\r" not in decision.log_text
        assert decision.http_status in (400, 401, 403, 409, 429, 503)
        return
    assert isinstance(decision, Permit)
    result = Registry(BundleConfig()).request_publish(decision.request, now_s=0.0)
    if isinstance(result, Refused):  #: control characters: the bundle's own name rule
        assert refusal_from_bundle(result, attempt=case).code in (
            RefusalCode.INVALID_STREAM_PATH,
            RefusalCode.INVALID_SOURCE_ID,
        )
