"""The CLI caps glibc malloc arenas (aggregator/arenas.py), counted with malloc_info."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Threads that all allocate at once, as a web process's pool threads do, then the number
# of arenas malloc made (malloc_info's <heap nr=...> elements).
PROGRAM = textwrap.dedent(
    """
    import ctypes, os, sys, tempfile, threading
    if sys.argv[1] == "capped":
        from aggregator.arenas import limit_malloc_arenas
        assert limit_malloc_arenas()
    start = threading.Barrier(8)
    def work():
        start.wait()
        for _ in range(2000):
            blocks = [bytearray(3000) for _ in range(50)]
            del blocks
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    path = tempfile.mktemp()
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(open(path).read().count("<heap nr="), os.environ.get("MALLOC_ARENA_MAX"))
    """
)


def _arenas(mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), out[1]


def test_the_cli_caps_malloc_arenas_for_itself_and_its_children() -> None:
    uncapped, _ = _arenas("uncapped")
    assert uncapped > 2, "eight allocating threads made no extra arenas: nothing to cap"
    capped, env = _arenas("capped")
    assert capped <= 2
    assert env == "2"  # uvicorn's and the parser pool's processes inherit it


def test_an_admins_own_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregator.arenas import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
    assert os.environ["MALLOC_ARENA_MAX"] == "4"
