"""How long the admin page and API take with many feeds.

    python bench/admin.py [--feeds 1000,10000] [--rounds 3]

For each size, a feeds.yaml with that many feeds (tags, some intervals, a comment heading
every 100) and the shipped topics, and a fresh SQLite store that knows them. The app runs
in-process (Starlette TestClient, admin token set). Printed per size, the median of
``--rounds`` of:

* ``GET /admin`` (the HTML page: health of every feed) and ``GET /admin/feeds`` (JSON);
* ``POST /admin/feeds`` then ``DELETE`` of it: an edit through feeds_file (ruamel.yaml round
  trip of the whole file, validation, atomic write) applied to the running process;
* ``POST /admin/topics/preview`` over the 200 most recent items (none here: the rule cost
  is in bench/tag_speed.py), i.e. the validation of the whole file with the topic in it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from ruamel.yaml import YAML  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from aggregator.service import Aggregator  # noqa: E402
from aggregator.web import create_app  # noqa: E402

TOKEN = "bench-admin-token-0123456789abcdef"


def feeds_yaml(n: int, db: Path) -> str:
    shipped = YAML(typ="rt").load((ROOT / "feeds.yaml").read_text())
    lines = [
        "# Benchmark feed list",
        "settings:",
        f"  database_url: sqlite:///{db}",
        "tagging:",
        "  classifier: false",
        "feeds:",
    ]
    for i in range(n):
        if i % 100 == 0:
            lines.append(f"  # Group {i // 100}")
        lines.append(f"  - url: https://site{i % 500}.example.com/feed/{i}.xml")
        lines.append(f"    title: Outlet {i}")
        lines.append(f"    tags: [group-{i // 100}, bench]")
        if i % 7 == 0:
            lines.append("    interval: 1h")
    text = "\n".join(lines) + "\n"
    start = (ROOT / "feeds.yaml").read_text().index("\ntopics:")
    assert shipped["topics"]
    return text + (ROOT / "feeds.yaml").read_text()[start + 1 :]


def timed(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def run(n: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp:
        path = Path(tmp) / "feeds.yaml"
        path.write_text(feeds_yaml(n, Path(tmp) / "store.db"))
        agg = Aggregator.from_file(path)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with TestClient(create_app(agg, poll=False), headers=headers) as c:

                def ok(r: object, status: int = 200) -> None:
                    assert getattr(r, "status_code", None) == status, getattr(r, "text", r)

                c.get("/admin")  # warm-up
                out = {
                    "page": timed(lambda: ok(c.get("/admin")), rounds),
                    "feeds_json": timed(lambda: ok(c.get("/admin/feeds")), rounds),
                }

                def add_remove() -> None:
                    r = c.post(
                        "/admin/feeds",
                        json={"url": "https://new.example.org/rss", "enabled": False},
                    )
                    ok(r, 201)
                    ok(c.delete(f"/admin/feeds/{r.json()['id']}"))

                out["add_remove"] = timed(add_remove, rounds) / 2
                topic = {"name": "Bench", "slug": "bench", "rules": {"keywords": ["x"]}}
                out["preview"] = timed(
                    lambda: ok(c.post("/admin/topics/preview", json={"topic": topic})), rounds
                )
                return out
        finally:
            agg.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", default="1000,10000")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["AGGREGATOR_ADMIN_TOKEN"] = TOKEN
    os.environ.pop("AGGREGATOR_ADMIN_TOKEN_FILE", None)
    os.environ.pop("AGGREGATOR_DATABASE_URL", None)
    print(
        f"{'feeds':>7} {'GET /admin':>11} {'GET feeds':>10} {'one edit':>9} {'preview':>8}"
        "  (ms, median)"
    )
    for n in (int(x) for x in args.feeds.split(",")):
        r = run(n, args.rounds)
        print(
            f"{n:>7} {r['page']:>11.0f} {r['feeds_json']:>10.0f} {r['add_remove']:>9.0f} "
            f"{r['preview']:>8.0f}"
        )


if __name__ == "__main__":
    main()
