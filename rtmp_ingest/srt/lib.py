"""A thin, typed ctypes binding of the libsrt calls the SRT listener uses.

libsrt (the SRT Alliance's reference implementation, Debian `libsrt1.5-openssl`) is
loaded once, on first use; `load()` raises `SrtUnavailable` with the install command
when it is missing, so the daemon can say so at start instead of failing later.

Only what the listener needs is bound: startup/cleanup, sockets, options, bind,
listen, the listen callback (runs in libsrt's receive thread, before accept),
reject reasons, accept, recvmsg, epoll (uwait), statistics, close and the last
error. Every call that fails raises `SrtError` with libsrt's message and code;
non-blocking reads that find nothing return None instead (SRT_EASYNCRCV).

libsrt sockets are not OS descriptors: trio cannot wait on them, so the driver
(server/srt.py) waits in srt_epoll_uwait in worker threads. Every function here
may be called from any thread; libsrt locks internally. Header: srt/srt.h 1.5.1.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import enum
import socket
import threading
from collections.abc import Callable

import attrs

#: Library names tried in order: the OpenSSL build Debian ships as libsrt1.5-openssl, its
#: GnuTLS twin (pulled in by ffmpeg), then whatever the linker finds.
LIBRARY_NAMES = ("libsrt.so.1.5", "libsrt-gnutls.so.1.5", "libsrt.so.1", "libsrt.so")
INSTALL_HINT = "apt-get install libsrt1.5-openssl"

SRT_INVALID_SOCK = -1
SRT_ERROR = -1
#: srt.h: SRT_LIVE_DEF_PLSIZE, 7 TS packets: the payload size every live caller uses
LIVE_PAYLOAD_BYTES = 1316
#: srt.h SRTO_* option numbers (enum SRT_SOCKOPT).


class Opt(enum.IntEnum):
    """Socket options (srt.h enum SRT_SOCKOPT) the listener sets or reads."""

    MSS = 0
    SNDSYN = 1
    RCVSYN = 2
    RCVBUF = 6
    LINGER = 7
    UDP_RCVBUF = 9
    REUSEADDR = 15
    STATE = 17
    SENDER = 21
    LATENCY = 23
    PASSPHRASE = 26
    PBKEYLEN = 27
    CONNTIMEO = 36
    RCVLATENCY = 43
    PEERLATENCY = 44
    STREAMID = 46
    MESSAGEAPI = 48
    PAYLOADSIZE = 49
    TRANSTYPE = 50
    ENFORCEDENCRYPTION = 53
    IPV6ONLY = 54
    PEERIDLETIMEO = 55


#: options whose value is a C string (the rest are int32 or bool-as-int32)
_STRING_OPTS = frozenset({Opt.PASSPHRASE, Opt.STREAMID})


class SockStatus(enum.IntEnum):
    """srt.h SRT_SOCKSTATUS."""

    INIT = 1
    OPENED = 2
    LISTENING = 3
    CONNECTING = 4
    CONNECTED = 5
    BROKEN = 6
    CLOSING = 7
    CLOSED = 8
    NONEXIST = 9


#: srt.h SRT_EPOLL_OPT
EPOLL_IN = 0x1
EPOLL_OUT = 0x4
EPOLL_ERR = 0x8
#: srt.h SRT_EPOLL_FLAGS: uwait on an empty set waits instead of failing
EPOLL_ENABLE_EMPTY = 1

#: srt.h SRT_ERRNO = major * 1000 + minor
ECONNREJ = 1002
ECONNLOST = 2001
ENOCONN = 2002
EINVSOCK = 5004
EASYNCRCV = 6002
ETIMEOUT = 6003

#: access_control.h: a reject reason of 1000 + an HTTP status is "SRT_REJX_<status>"; the
#: caller logs the number (and libsrt's text for the named ones).
REJX_BASE = 1000
REJX_BAD_REQUEST = 1400
REJX_UNAUTHORIZED = 1401
REJX_FORBIDDEN = 1403
REJX_NOTFOUND = 1404
REJX_BAD_MODE = 1405
REJX_CONFLICT = 1409
REJX_TOO_MANY = 1429
REJX_ISE = 1500
REJX_DOWN = 1503


class SrtUnavailable(RuntimeError):
    """libsrt could not be loaded (the message says how to install it)."""


class SrtError(OSError):
    """A libsrt call failed; `code` is the SRT_ERRNO value."""

    def __init__(self, call: str, message: str, code: int) -> None:
        super().__init__(f"{call}: {message} (SRT error {code})")
        self.call = call
        self.code = code


class _PerfMon(ctypes.Structure):
    """srt.h struct CBytePerfMon (SRT_TRACEBSTATS), all of it: srt_bstats writes it whole."""

    _fields_ = [
        ("msTimeStamp", ctypes.c_int64),
        ("pktSentTotal", ctypes.c_int64),
        ("pktRecvTotal", ctypes.c_int64),
        ("pktSndLossTotal", ctypes.c_int),
        ("pktRcvLossTotal", ctypes.c_int),
        ("pktRetransTotal", ctypes.c_int),
        ("pktSentACKTotal", ctypes.c_int),
        ("pktRecvACKTotal", ctypes.c_int),
        ("pktSentNAKTotal", ctypes.c_int),
        ("pktRecvNAKTotal", ctypes.c_int),
        ("usSndDurationTotal", ctypes.c_int64),
        ("pktSndDropTotal", ctypes.c_int),
        ("pktRcvDropTotal", ctypes.c_int),
        ("pktRcvUndecryptTotal", ctypes.c_int),
        ("byteSentTotal", ctypes.c_uint64),
        ("byteRecvTotal", ctypes.c_uint64),
        ("byteRcvLossTotal", ctypes.c_uint64),
        ("byteRetransTotal", ctypes.c_uint64),
        ("byteSndDropTotal", ctypes.c_uint64),
        ("byteRcvDropTotal", ctypes.c_uint64),
        ("byteRcvUndecryptTotal", ctypes.c_uint64),
        ("pktSent", ctypes.c_int64),
        ("pktRecv", ctypes.c_int64),
        ("pktSndLoss", ctypes.c_int),
        ("pktRcvLoss", ctypes.c_int),
        ("pktRetrans", ctypes.c_int),
        ("pktRcvRetrans", ctypes.c_int),
        ("pktSentACK", ctypes.c_int),
        ("pktRecvACK", ctypes.c_int),
        ("pktSentNAK", ctypes.c_int),
        ("pktRecvNAK", ctypes.c_int),
        ("mbpsSendRate", ctypes.c_double),
        ("mbpsRecvRate", ctypes.c_double),
        ("usSndDuration", ctypes.c_int64),
        ("pktReorderDistance", ctypes.c_int),
        ("pktRcvAvgBelatedTime", ctypes.c_double),
        ("pktRcvBelated", ctypes.c_int64),
        ("pktSndDrop", ctypes.c_int),
        ("pktRcvDrop", ctypes.c_int),
        ("pktRcvUndecrypt", ctypes.c_int),
        ("byteSent", ctypes.c_uint64),
        ("byteRecv", ctypes.c_uint64),
        ("byteRcvLoss", ctypes.c_uint64),
        ("byteRetrans", ctypes.c_uint64),
        ("byteSndDrop", ctypes.c_uint64),
        ("byteRcvDrop", ctypes.c_uint64),
        ("byteRcvUndecrypt", ctypes.c_uint64),
        ("usPktSndPeriod", ctypes.c_double),
        ("pktFlowWindow", ctypes.c_int),
        ("pktCongestionWindow", ctypes.c_int),
        ("pktFlightSize", ctypes.c_int),
        ("msRTT", ctypes.c_double),
        ("mbpsBandwidth", ctypes.c_double),
        ("byteAvailSndBuf", ctypes.c_int),
        ("byteAvailRcvBuf", ctypes.c_int),
        ("mbpsMaxBW", ctypes.c_double),
        ("byteMSS", ctypes.c_int),
        ("pktSndBuf", ctypes.c_int),
        ("byteSndBuf", ctypes.c_int),
        ("msSndBuf", ctypes.c_int),
        ("msSndTsbPdDelay", ctypes.c_int),
        ("pktRcvBuf", ctypes.c_int),
        ("byteRcvBuf", ctypes.c_int),
        ("msRcvBuf", ctypes.c_int),
        ("msRcvTsbPdDelay", ctypes.c_int),
        ("pktSndFilterExtraTotal", ctypes.c_int),
        ("pktRcvFilterExtraTotal", ctypes.c_int),
        ("pktRcvFilterSupplyTotal", ctypes.c_int),
        ("pktRcvFilterLossTotal", ctypes.c_int),
        ("pktSndFilterExtra", ctypes.c_int),
        ("pktRcvFilterExtra", ctypes.c_int),
        ("pktRcvFilterSupply", ctypes.c_int),
        ("pktRcvFilterLoss", ctypes.c_int),
        ("pktReorderTolerance", ctypes.c_int),
        ("pktSentUniqueTotal", ctypes.c_int64),
        ("pktRecvUniqueTotal", ctypes.c_int64),
        ("byteSentUniqueTotal", ctypes.c_uint64),
        ("byteRecvUniqueTotal", ctypes.c_uint64),
        ("pktSentUnique", ctypes.c_int64),
        ("pktRecvUnique", ctypes.c_int64),
        ("byteSentUnique", ctypes.c_uint64),
        ("byteRecvUnique", ctypes.c_uint64),
    ]


class _EpollEvent(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_int)]


@attrs.frozen
class Statistics:
    """What the API shows of one SRT connection (srt_bstats, totals since connect)."""

    rtt_ms: float
    bandwidth_mbps: float
    receive_rate_mbps: float
    packets_received: int
    packets_lost: int  #: detected lost on receive (before retransmission)
    packets_retransmitted: int  #: retransmitted packets received
    packets_dropped: int  #: too late to play: what the retransmissions could not save
    bytes_received: int
    latency_ms: int
    receive_buffer_ms: int


#: int srt_listen_callback_fn(void* opaq, SRTSOCKET ns, int hsversion,
#:                            const struct sockaddr* peeraddr, const char* streamid)
LISTEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_char_p,
)

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_started = 0  #: users between startup() and cleanup()
_initialised = False  #: srt_startup was called (srt_cleanup runs at exit)


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    table: dict[str, tuple[object, list[object]]] = {
        "srt_startup": (c_int, []),
        "srt_cleanup": (c_int, []),
        "srt_create_socket": (c_int, []),
        "srt_bind": (c_int, [c_int, c_void_p, c_int]),
        "srt_listen": (c_int, [c_int, c_int]),
        "srt_accept": (c_int, [c_int, c_void_p, ctypes.POINTER(c_int)]),
        "srt_listen_callback": (c_int, [c_int, LISTEN_CALLBACK, c_void_p]),
        "srt_close": (c_int, [c_int]),
        "srt_getpeername": (c_int, [c_int, c_void_p, ctypes.POINTER(c_int)]),
        "srt_getsockname": (c_int, [c_int, c_void_p, ctypes.POINTER(c_int)]),
        "srt_getsockflag": (c_int, [c_int, c_int, c_void_p, ctypes.POINTER(c_int)]),
        "srt_setsockflag": (c_int, [c_int, c_int, c_void_p, c_int]),
        "srt_recvmsg": (c_int, [c_int, c_void_p, c_int]),
        "srt_connect": (c_int, [c_int, c_void_p, c_int]),
        "srt_sendmsg": (c_int, [c_int, c_void_p, c_int, c_int, c_int]),
        "srt_getlasterror_str": (c_char_p, []),
        "srt_getlasterror": (c_int, [ctypes.POINTER(c_int)]),
        "srt_clearlasterror": (None, []),
        "srt_bstats": (c_int, [c_int, ctypes.POINTER(_PerfMon), c_int]),
        "srt_getsockstate": (c_int, [c_int]),
        "srt_epoll_create": (c_int, []),
        "srt_epoll_add_usock": (c_int, [c_int, c_int, ctypes.POINTER(c_int)]),
        "srt_epoll_remove_usock": (c_int, [c_int, c_int]),
        "srt_epoll_uwait": (c_int, [c_int, ctypes.POINTER(_EpollEvent), c_int, ctypes.c_int64]),
        "srt_epoll_set": (ctypes.c_int32, [c_int, ctypes.c_int32]),
        "srt_epoll_release": (c_int, [c_int]),
        "srt_setloglevel": (None, [c_int]),
        "srt_setrejectreason": (c_int, [c_int, c_int]),
        "srt_getrejectreason": (c_int, [c_int]),
        "srt_rejectreason_str": (c_char_p, [c_int]),
        "srt_getversion": (ctypes.c_uint32, []),
    }
    for name, (restype, argtypes) in table.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def load() -> ctypes.CDLL:
    """The loaded library (loaded on first call); SrtUnavailable if it is not installed."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        found = ctypes.util.find_library("srt")
        names = LIBRARY_NAMES + ((found,) if found else ())
        errors = []
        for name in names:
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                errors.append(str(exc))
                continue
            try:
                _declare(lib)
            except AttributeError as exc:
                errors.append(f"{name}: {exc}")
                continue
            _lib = lib
            return lib
        raise SrtUnavailable(
            f"SRT ingest needs libsrt 1.5 and it could not be loaded ({'; '.join(errors[:2])}). "
            f"Install it ({INSTALL_HINT}) or set [srt] enabled = false."
        )


def available() -> bool:
    """Whether libsrt can be loaded."""
    try:
        load()
    except SrtUnavailable:
        return False
    return True


def _fail(call: str) -> SrtError:
    lib = load()
    code = lib.srt_getlasterror(None)
    text = lib.srt_getlasterror_str() or b"unknown error"
    return SrtError(call, text.decode("utf-8", "replace"), code)


def _check(call: str, result: int) -> int:
    if result == SRT_ERROR:
        raise _fail(call)
    return result


# -- library lifetime ------------------------------------------------------------------


def startup(*, log_level: int = 2) -> None:
    """srt_startup, once per process (later calls only count users); quiet logging.

    `log_level` is a syslog level for libsrt's own stderr log; 2 (LOG_CRIT) keeps it to
    fatal problems: rejections, lost connections and an empty accept queue (which libsrt
    logs as errors) are the driver's to log.
    """
    global _started, _initialised
    lib = load()
    with _lib_lock:
        if not _initialised:
            _check("srt_startup", lib.srt_startup())
            _initialised = True
        _started += 1
    lib.srt_setloglevel(log_level)


def cleanup() -> None:
    """One user is done. libsrt itself stays up until the process exits.

    libsrt 1.5.1 does not survive srt_startup → srt_cleanup → srt_startup cycles: the
    process aborts at exit ("double free or corruption") after a few. So the library is
    started once and cleaned up once, at exit, whatever the number of servers and
    callers that came and went (each closes its own sockets).
    """
    global _started
    with _lib_lock:
        _started = max(0, _started - 1)


@atexit.register
def _cleanup_at_exit() -> None:
    #: libsrt's threads must be stopped before the process exits, or glibc aborts it
    global _initialised
    if _lib is not None and _initialised:
        _initialised = False
        _lib.srt_cleanup()


def version() -> str:
    """libsrt's version, "1.5.1"."""
    raw = int(load().srt_getversion())
    return f"{raw >> 16}.{(raw >> 8) & 0xFF}.{raw & 0xFF}"


# -- sockets ---------------------------------------------------------------------------


def create_socket() -> int:
    return _check("srt_create_socket", load().srt_create_socket())


def close(sock: int) -> None:
    """srt_close; closing a socket libsrt already forgot is not an error."""
    load().srt_close(sock)


def _sockaddr(host: str, port: int) -> tuple[ctypes.Array[ctypes.c_char], int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    packed = socket.inet_pton(family, host)
    if family == socket.AF_INET:
        #: struct sockaddr_in: family (host order, Linux), port (network order), address
        raw = family.to_bytes(2, "little") + port.to_bytes(2, "big") + packed + bytes(8)
    else:
        raw = family.to_bytes(2, "little") + port.to_bytes(2, "big") + bytes(4) + packed + bytes(4)
    return ctypes.create_string_buffer(raw, len(raw)), len(raw)


def _address(raw: bytes) -> tuple[str, int]:
    family = int.from_bytes(raw[0:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    return "unknown", 0


def sockaddr_of(pointer: int | None) -> tuple[str, int]:
    """(host, port) of a `const struct sockaddr*` libsrt handed to a callback."""
    if not pointer:
        return "unknown", 0
    return _address(ctypes.string_at(pointer, 28))


def bind(sock: int, host: str, port: int) -> None:
    address, size = _sockaddr(host, port)
    _check("srt_bind", load().srt_bind(sock, address, size))


def listen(sock: int, backlog: int) -> None:
    _check("srt_listen", load().srt_listen(sock, backlog))


def sockname(sock: int) -> tuple[str, int]:
    buffer = ctypes.create_string_buffer(28)
    size = ctypes.c_int(28)
    _check("srt_getsockname", load().srt_getsockname(sock, buffer, ctypes.byref(size)))
    return _address(buffer.raw)


def peername(sock: int) -> tuple[str, int]:
    buffer = ctypes.create_string_buffer(28)
    size = ctypes.c_int(28)
    _check("srt_getpeername", load().srt_getpeername(sock, buffer, ctypes.byref(size)))
    return _address(buffer.raw)


def accept(sock: int) -> int | None:
    """The next accepted connection, or None when none is waiting (non-blocking listener)."""
    lib = load()
    buffer = ctypes.create_string_buffer(28)
    size = ctypes.c_int(28)
    new = lib.srt_accept(sock, buffer, ctypes.byref(size))
    if new == SRT_INVALID_SOCK:
        error = _fail("srt_accept")
        if error.code == EASYNCRCV:
            return None
        raise error
    return int(new)


def connect(sock: int, host: str, port: int) -> None:
    """srt_connect (caller mode; tests and benchmarks publish with it). A rejection raises
    SrtError with code ECONNREJ; `reject_reason(sock)` then tells the listener's reason."""
    address, size = _sockaddr(host, port)
    _check("srt_connect", load().srt_connect(sock, address, size))


def sendmsg(sock: int, data: bytes) -> int:
    """srt_sendmsg of one message (live mode: at most SRTO_PAYLOADSIZE bytes)."""
    return _check("srt_sendmsg", load().srt_sendmsg(sock, data, len(data), -1, 0))


def set_option(sock: int, option: Opt, value: int | bool | str | bytes) -> None:
    """srt_setsockflag with an int/bool or (passphrase, stream id) text value."""
    lib = load()
    if option in _STRING_OPTS:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        buffer = ctypes.create_string_buffer(raw, len(raw))
        result = lib.srt_setsockflag(sock, option, buffer, len(raw))
    else:
        number = ctypes.c_int32(int(value))
        result = lib.srt_setsockflag(sock, option, ctypes.byref(number), 4)
    _check(f"srt_setsockflag({option.name})", result)


def get_option(sock: int, option: Opt) -> int | str:
    """srt_getsockflag: an int, or text for the stream id."""
    lib = load()
    if option in _STRING_OPTS:
        buffer = ctypes.create_string_buffer(1024)
        size = ctypes.c_int(1024)
        _check(
            f"srt_getsockflag({option.name})",
            lib.srt_getsockflag(sock, option, buffer, ctypes.byref(size)),
        )
        return buffer.raw[: size.value].decode("utf-8", "replace")
    number = ctypes.c_int64(0)  #: room for the 64-bit options; the 32-bit ones fill the low half
    size = ctypes.c_int(8)
    _check(
        f"srt_getsockflag({option.name})",
        lib.srt_getsockflag(sock, option, ctypes.byref(number), ctypes.byref(size)),
    )
    value = number.value
    if size.value == 4:
        value = ctypes.c_int32(value & 0xFFFFFFFF).value
    return value


def state(sock: int) -> SockStatus:
    return SockStatus(load().srt_getsockstate(sock))


def set_reject_reason(sock: int, reason: int) -> None:
    """srt_setrejectreason: what the caller's srt_connect reports (1000 + HTTP status)."""
    _check("srt_setrejectreason", load().srt_setrejectreason(sock, reason))


def reject_reason(sock: int) -> int:
    return int(load().srt_getrejectreason(sock))


def reject_reason_text(reason: int) -> str:
    text = load().srt_rejectreason_str(reason)
    return text.decode("utf-8", "replace") if text else ""


ListenHook = Callable[[int, int, tuple[str, int], str], bool]


def set_listen_callback(sock: int, hook: ListenHook) -> object:
    """Installs `hook(new_socket, hs_version, (host, port), stream_id) -> accept?`.

    The hook runs in libsrt's receive thread before the connection is accepted: it
    must be quick and must not raise (an exception rejects). To reject with a
    reason it calls `set_reject_reason(new_socket, ...)` and returns False. The
    returned object keeps the C callback alive: hold it as long as the listener.
    """

    def trampoline(
        _opaque: int | None, new: int, hs_version: int, peer: int | None, stream_id: bytes | None
    ) -> int:
        try:
            text = (stream_id or b"").decode("utf-8", "surrogateescape")
            accepted = hook(new, hs_version, sockaddr_of(peer), text)
        except BaseException:  # noqa: BLE001 - nothing may unwind into libsrt's thread
            return -1
        return 0 if accepted else -1

    callback = LISTEN_CALLBACK(trampoline)
    _check("srt_listen_callback", load().srt_listen_callback(sock, callback, None))
    return callback


def recvmsg(sock: int, buffer: ctypes.Array[ctypes.c_char]) -> int | None:
    """Bytes of the next message read into `buffer`; None when nothing is ready (non-blocking)."""
    lib = load()
    received = lib.srt_recvmsg(sock, buffer, len(buffer))
    if received == SRT_ERROR:
        error = _fail("srt_recvmsg")
        if error.code == EASYNCRCV:
            return None
        raise error
    return int(received)


def receive_buffer(size: int = LIVE_PAYLOAD_BYTES) -> ctypes.Array[ctypes.c_char]:
    """A buffer for recvmsg: one message of the live payload size (SRTO_PAYLOADSIZE)."""
    return ctypes.create_string_buffer(size)


def statistics(sock: int) -> Statistics:
    """srt_bstats totals (no clear)."""
    perf = _PerfMon()
    _check("srt_bstats", load().srt_bstats(sock, ctypes.byref(perf), 0))
    return Statistics(
        rtt_ms=perf.msRTT,
        bandwidth_mbps=perf.mbpsBandwidth,
        receive_rate_mbps=perf.mbpsRecvRate,
        packets_received=perf.pktRecvTotal,
        packets_lost=perf.pktRcvLossTotal,
        packets_retransmitted=perf.pktRcvRetrans,
        packets_dropped=perf.pktRcvDropTotal,
        bytes_received=perf.byteRecvTotal,
        latency_ms=perf.msRcvTsbPdDelay,
        receive_buffer_ms=perf.msRcvBuf,
    )


# -- epoll -----------------------------------------------------------------------------


class Epoll:
    """An SRT epoll set; `wait` (srt_epoll_uwait) blocks the calling thread."""

    def __init__(self, *, max_events: int = 64) -> None:
        lib = load()
        self._lib = lib
        self.eid = _check("srt_epoll_create", lib.srt_epoll_create())
        lib.srt_epoll_set(self.eid, EPOLL_ENABLE_EMPTY)
        self._events = (_EpollEvent * max_events)()
        self._max = max_events

    def add(self, sock: int, events: int = EPOLL_IN | EPOLL_ERR) -> None:
        flags = ctypes.c_int(events)
        _check("srt_epoll_add_usock", self._lib.srt_epoll_add_usock(self.eid, sock, flags))

    def remove(self, sock: int) -> None:
        """Forgets `sock` (a socket libsrt already closed is not an error)."""
        self._lib.srt_epoll_remove_usock(self.eid, sock)

    def wait(self, timeout_ms: int) -> list[tuple[int, int]]:
        """(socket, events) ready within `timeout_ms`; [] on timeout."""
        lib = self._lib
        count = lib.srt_epoll_uwait(self.eid, self._events, self._max, timeout_ms)
        if count == SRT_ERROR:
            error = _fail("srt_epoll_uwait")
            if error.code == ETIMEOUT:
                return []
            raise error
        events = self._events
        return [(events[i].fd, events[i].events) for i in range(count)]

    def release(self) -> None:
        self._lib.srt_epoll_release(self.eid)
