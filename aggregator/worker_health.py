"""``GET /healthz`` of an ``aggregator worker`` process (``--health-port``).

A worker serves no feeds, but a supervisor (systemd, Kubernetes, a load balancer's checks)
still needs to know whether it works: 200 while the store answers and claims succeed, 503
(with why) while the store is down or claims keep failing. The worker retries by itself
with backoff meanwhile (aggregator/worker.py); this only reports.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .exceptions import StorageError
from .service import Aggregator


def create_worker_app(agg: Aggregator) -> Starlette:
    async def healthz(request: Request) -> Response:
        worker = agg.worker
        body: dict[str, object] = {"status": "ok", "database": "ok"}
        if worker is not None:
            body |= {"owner": worker.owner, "polling": len(worker.in_flight)}
        try:
            await asyncio.to_thread(agg.repo.ping)
        except StorageError as e:
            body |= {"status": "unhealthy", "database": str(e).splitlines()[0][:300]}
        if worker is not None and worker.claim_failures:
            body |= {"status": "unhealthy", "claim_failures": worker.claim_failures}
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    return Starlette(routes=[Route("/healthz", healthz)])
