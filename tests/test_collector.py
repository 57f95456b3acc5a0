"""Our processes collect cyclic garbage at their own pace (aggregator/collector.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from aggregator.collector import YOUNG, pace_collector


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    try:
        yield before
    finally:
        gc.set_threshold(*before)


def test_the_young_generation_is_collected_less_often_and_older_ones_as_before(
    thresholds: tuple[int, int, int],
) -> None:
    gc.set_threshold(700, 7, 9)
    pace_collector()
    assert gc.get_threshold() == (YOUNG, 7, 9)


@pytest.mark.parametrize("entry", ["main", "serve_main"])
def test_the_console_scripts_pace_their_process(entry: str) -> None:
    # --help runs the entry point's whole setup, then exits without serving.
    program = textwrap.dedent(
        f"""
        import gc, sys
        from aggregator import cli
        sys.argv = ["aggregator", "--help"]
        try:
            cli.{entry}(["--help"]) if "{entry}" == "serve_main" else cli.{entry}()
        except SystemExit:
            pass
        print("threshold", *gc.get_threshold())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"threshold {YOUNG} 10 10" in out.splitlines()
