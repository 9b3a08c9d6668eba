"""Authorization as every ingest and play driver calls it: the policy, then the hook.

`Authorizer.authorize(attempt)` runs the pure `Policy.decide` and, when it permits
and a publish hook is configured, asks the hook (`hooks.py`) — so RTMP, SRT and
WHIP all get tokens, bans, the multisource gates and the hook the same way. The
hook is asked only after the policy permitted, so a client without a valid token
never reaches the operator's service. `authorize_play` asks the hook for players
(there is no play token); `unpublished` notifies it when a feed ends.

The driver turns the answer into its protocol's terms: a `Permit`'s request goes
to `Registry.request_publish` (whose `Refused` becomes a `Refusal` through
`refusal_from_bundle`), a `Refusal` carries the RTMP code, the HTTP status and
the SRT reject code. Unix time comes from `clock` (tests pass a fixed one).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Collection, Mapping
from typing import Literal, Protocol
from urllib.parse import urlsplit

import attrs

from rtmp_ingest.auth.policy import (
    Permit,
    Policy,
    PublishAttempt,
    Refusal,
    RefusalCode,
    shown,
)
from rtmp_ingest.auth.tokens import TokenClaims

PlayProtocol = Literal["rtmp", "rtmps", "httpflv", "hls", "webrtc"]
RTMP_PLAY_FAILED = "NetStream.Play.Failed"
HookAction = Literal["publish", "unpublish", "play"]
ACTIONS: tuple[HookAction, ...] = ("publish", "unpublish", "play")
FAILURE_POLICIES = ("deny", "allow")
#: The hook's URL is configuration, but bound it so a typo cannot become a huge request line.
MAX_HOOK_URL_CHARS = 2048
#: A hook that needs longer than this is down, as far as a waiting encoder is concerned.
MAX_HOOK_TIMEOUT_S = 60.0


class HookSettings(Protocol):
    """`[auth.hooks]` (config's HooksConfig satisfies it)."""

    @property
    def url(self) -> str: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def on_failure(self) -> str: ...

    @property
    def actions(self) -> Collection[str]: ...


def check_hook_settings(settings: HookSettings) -> str | None:
    """One line naming the bad `[auth.hooks]` key, or None."""
    if settings.url:
        if len(settings.url) > MAX_HOOK_URL_CHARS:
            return f"auth.hooks.url: longer than {MAX_HOOK_URL_CHARS} characters"
        try:
            url = urlsplit(settings.url)
            url.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            return f"auth.hooks.url: {exc}"
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"auth.hooks.url: expected http(s)://HOST[:PORT]/PATH, got {settings.url[:80]!r}"
    if not 0 < settings.timeout_s <= MAX_HOOK_TIMEOUT_S:  #: also false for NaN
        return f"auth.hooks.timeout_s: must be more than 0 and at most {MAX_HOOK_TIMEOUT_S:g}"
    if settings.on_failure not in FAILURE_POLICIES:
        return f'auth.hooks.on_failure: must be "deny" or "allow", not {settings.on_failure!r}'
    unknown = sorted(set(settings.actions) - set(ACTIONS))
    if unknown:
        return (
            f"auth.hooks.actions: unknown action(s) {', '.join(unknown)} (use {', '.join(ACTIONS)})"
        )
    return None


class Outcome(enum.Enum):
    """What the hook said."""

    ALLOWED = "allowed"
    DENIED = "denied"  # the hook answered, not 2xx
    FAILED = "failed"  # no answer: timeout, connection refused, broken response


@attrs.frozen(kw_only=True)
class HookAnswer:
    outcome: Outcome
    #: the HTTP status (None when the hook did not answer)
    status: int | None = None
    #: the answer's body (truncated, control characters removed), or what went wrong
    reason: str = ""


class Hook(Protocol):
    """What the authorizer needs of the hook client (`hooks.HookClient` satisfies it)."""

    @property
    def on_failure(self) -> str: ...

    def wants(self, action: str) -> bool: ...

    async def ask(self, action: str, payload: Mapping[str, object]) -> HookAnswer: ...

    def notify_nowait(self, action: str, payload: Mapping[str, object]) -> bool: ...


@attrs.frozen(kw_only=True)
class PlayAttempt:
    """A player asking for a stream (or one source of it)."""

    protocol: PlayProtocol
    stream_path: str
    #: None: the whole stream (or the default source, as the protocol decides)
    source_id: str | None = None
    query: Mapping[str, str] = attrs.field(factory=dict)
    remote: str = ""

    def describe(self) -> str:
        return (
            f"protocol={self.protocol} stream={shown(self.stream_path)} "
            f"sourceId={shown(self.source_id or '')} remote={shown(self.remote)}"
        )


def publish_payload(
    attempt: PublishAttempt, *, claims: TokenClaims | None = None
) -> dict[str, object]:
    """The hook's JSON for a publish or unpublish (the query as the client sent it)."""
    payload: dict[str, object] = {
        "protocol": attempt.protocol,
        "app": attempt.app,
        "stream": attempt.stream_path,
        "sourceId": attempt.source_id,
        "query": dict(attempt.query),
        "remoteAddr": attempt.remote,
    }
    if claims is not None:
        payload["tokenId"] = claims.token_id
        payload["tokenLabel"] = claims.label
    return payload


def play_payload(attempt: PlayAttempt) -> dict[str, object]:
    return {
        "protocol": attempt.protocol,
        "app": attempt.stream_path.partition("/")[0],
        "stream": attempt.stream_path,
        "sourceId": attempt.source_id,
        "query": dict(attempt.query),
        "remoteAddr": attempt.remote,
    }


def _hook_refusal(
    answer: HookAnswer, *, on_failure: str, context: str, play: bool
) -> Refusal | None:
    """None when the hook's answer allows (or its failure is tolerated)."""
    what = "Play" if play else "Publish"
    if answer.outcome is Outcome.ALLOWED:
        return None
    if answer.outcome is Outcome.FAILED:
        if on_failure == "allow":
            return None
        code = RefusalCode.HOOK_UNAVAILABLE
        status_text = f"{what} refused: the authorization service is unavailable."
        detail = f"hook failed: {answer.reason}"
    else:
        code = RefusalCode.HOOK_DENIED
        reason = answer.reason or f"refused by the publish hook (HTTP {answer.status})"
        status_text = f"{what} refused: {reason}"
        detail = f"hook answered HTTP {answer.status}: {shown(answer.reason)}"
    refusal = Refusal.of(code, status_text, detail=detail)
    return attrs.evolve(
        refusal,
        log_text=f"{what.lower()} refused {context} reason={code.value}: {detail}",
        rtmp_code=RTMP_PLAY_FAILED if play else refusal.rtmp_code,
    )


class Authorizer:
    """The policy and the hook, for every protocol driver."""

    def __init__(
        self,
        policy: Policy,
        *,
        hook: Hook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.hook = hook
        self._clock = clock

    def decide_nowait(self, attempt: PublishAttempt) -> Permit | Refusal:
        """The policy alone (no hook), for a caller that cannot wait."""
        return self.policy.decide(attempt, now_s=self._clock())

    async def authorize(self, attempt: PublishAttempt) -> Permit | Refusal:
        """May this publish go to the bundle? Policy first; the hook only if it permits."""
        decision = self.policy.decide(attempt, now_s=self._clock())
        hook = self.hook
        if isinstance(decision, Refusal) or hook is None or not hook.wants("publish"):
            return decision
        answer = await hook.ask("publish", publish_payload(attempt, claims=decision.claims))
        refusal = _hook_refusal(
            answer, on_failure=hook.on_failure, context=attempt.describe(), play=False
        )
        return decision if refusal is None else refusal

    async def authorize_play(self, attempt: PlayAttempt) -> Refusal | None:
        """None when the player may play (no hook, or the hook allows)."""
        hook = self.hook
        if hook is None or not hook.wants("play"):
            return None
        answer = await hook.ask("play", play_payload(attempt))
        return _hook_refusal(
            answer, on_failure=hook.on_failure, context=attempt.describe(), play=True
        )

    def unpublished(
        self, attempt: PublishAttempt, *, reason: str, claims: TokenClaims | None = None
    ) -> None:
        """Tells the hook a feed ended (in the background; never waits, never raises)."""
        if self.hook is not None and self.hook.wants("unpublish"):
            self.hook.notify_nowait(
                "unpublish", {**publish_payload(attempt, claims=claims), "reason": reason}
            )
