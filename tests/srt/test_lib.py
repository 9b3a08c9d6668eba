"""The binding: a clear error when libsrt is missing; options and sockets round trip."""

from __future__ import annotations

import re

import pytest

from rtmp_ingest.srt import lib


def test_missing_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lib, "_lib", None)
    monkeypatch.setattr(lib, "LIBRARY_NAMES", ("libsrt-not-there.so.9",))
    monkeypatch.setattr(lib.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(lib.SrtUnavailable, match=re.escape("apt-get install libsrt1.5-openssl")):
        lib.load()
    assert not lib.available()


@pytest.mark.skipif(not lib.available(), reason="libsrt not installed")
def test_options_and_errors() -> None:
    lib.startup()
    try:
        sock = lib.create_socket()
        lib.set_option(sock, lib.Opt.LATENCY, 250)
        lib.set_option(sock, lib.Opt.STREAMID, "#!::r=live/x,m=publish")
        assert lib.get_option(sock, lib.Opt.LATENCY) == 250
        assert lib.get_option(sock, lib.Opt.STREAMID) == "#!::r=live/x,m=publish"
        assert lib.state(sock) is lib.SockStatus.INIT
        with pytest.raises(lib.SrtError) as info:
            lib.set_option(sock, lib.Opt.PASSPHRASE, "short")  # 10..79 characters
        assert "srt_setsockflag(PASSPHRASE)" in str(info.value)
        lib.bind(sock, "127.0.0.1", 0)
        assert lib.sockname(sock)[0] == "127.0.0.1"
        lib.close(sock)
        assert lib.version().startswith("1.")
    finally:
        lib.cleanup()
