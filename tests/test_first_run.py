"""A new user's first `make run`, in a fresh clone: it installs only what running needs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from test_cli import free_port

ROOT = Path(__file__).parent.parent
# pip reads its index and cache from the machine's configuration; no step of `make run`
# fetches anything else, so a warm cache bounds this (the README has cold figures).
INSTALL_TIMEOUT = 900


@pytest.mark.slow
def test_make_run_in_a_fresh_clone_serves_healthz_without_dev_tools(tmp_path: Path) -> None:
    assert shutil.which("git") and shutil.which("make"), "git and make are needed"
    clone = tmp_path / "aggregator"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "AGGREGATOR_"))}
    # --no-poll: the shipped feeds.yaml lists real sites, and this test reaches no network
    # beyond the package index; the topics (and so the classifier extra) are the shipped ones.
    log = (tmp_path / "make-run.log").open("w")
    proc = subprocess.Popen(
        ["make", "run", f"RUN_ARGS=--port {port} --no-poll", "PYTHON=python3"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + INSTALL_TIMEOUT
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "make-run.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "make run did not serve /healthz in time"
                time.sleep(1)
        assert r.status_code == 200 and r.json()["status"] == "ok"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    site = list((clone / ".venv" / "lib").glob("python3*/site-packages"))
    assert len(site) == 1, site
    installed = {p.name.lower() for p in site[0].iterdir()}
    for tool in ("pytest", "mypy", "ruff", "selenium", "hypothesis", "datasketch"):
        assert not {n for n in installed if n == tool or n.startswith(tool + "-")}, tool
    assert (clone / ".venv" / ".run-stamp").exists()
    assert not (clone / ".venv" / ".dev-stamp").exists()
