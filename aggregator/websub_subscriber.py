"""Routes of the WebSub subscriber: the callback URLs hubs call (logic in subscriber.py).

    GET  /websub/callback/{id}   verification of intent: the challenge, or 404
    POST /websub/callback/{id}   content distribution: a signed feed body, ingested at once

The aggregator's own hub (/websub/hub) is another module; this one only receives.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .service import Aggregator
from .subscriber import CALLBACK_PATH

_ID = {
    "name": "callback_id",
    "in": "path",
    "required": True,
    "description": "The random token of one of our subscriptions",
    "schema": {"type": "string"},
}
OPENAPI_PATHS = {
    CALLBACK_PATH + "{callback_id}": {
        "get": {
            "tags": ["websub"],
            "summary": "WebSub verification of intent (called by a hub we subscribed to)",
            "parameters": [
                _ID,
                *(
                    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                    for n in ("hub.mode", "hub.topic", "hub.challenge", "hub.lease_seconds")
                ),
            ],
            "responses": {
                "200": {
                    "description": "hub.challenge echoed: the subscription is ours",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "404": {"description": "No pending subscription with that id and topic"},
            },
        },
        "post": {
            "tags": ["websub"],
            "summary": "WebSub content distribution: the feed's new content, HMAC-signed",
            "parameters": [
                _ID,
                {
                    "name": "X-Hub-Signature",
                    "in": "header",
                    "required": True,
                    "description": "sha1|sha256|sha384|sha512=HMAC of the body with our secret",
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {"content": {"*/*": {"schema": {"type": "string"}}}},
            "responses": {
                "202": {"description": "Received (ingested if the signature is right)"},
                "410": {"description": "No such subscription, or a feed no longer followed"},
                "413": {"description": "Body over settings.max_body_bytes"},
            },
        },
    }
}


def routes(agg: Aggregator) -> list[Route]:
    async def verify(request: Request) -> Response:
        callback_id = request.path_params["callback_id"]
        params = dict(request.query_params)
        challenge = await asyncio.to_thread(agg.subscriber.verify, callback_id, params)
        if challenge is None:
            return PlainTextResponse("no such pending subscription", status_code=404)
        return PlainTextResponse(challenge)

    async def push(request: Request) -> Response:
        callback_id = request.path_params["callback_id"]
        cap = agg.limits.max_body_bytes
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > cap:
                return PlainTextResponse(f"body over {cap} bytes", status_code=413)
        sub = await asyncio.to_thread(
            agg.subscriber.accept_push,
            callback_id,
            bytes(body),
            request.headers.get("x-hub-signature"),
        )
        if sub is None:
            if not await asyncio.to_thread(agg.subscriber.known, callback_id):
                # 410 tells the hub to drop a subscription we no longer hold.
                return PlainTextResponse("no such subscription", status_code=410)
            # A bad signature is acknowledged and ignored (WebSub section 8): the sender
            # learns nothing from the answer.
            return Response(status_code=202)
        if not await asyncio.to_thread(agg.polls_feed, sub.feed_url):
            # Removed from feeds.yaml, switched off, or gone (410): we want no more of it,
            # and a 410 makes the hub drop the subscription now, not when the lease ends.
            await asyncio.to_thread(agg.subscriber.store.delete, callback_id)
            return PlainTextResponse("the feed is no longer followed", status_code=410)
        headers = {k.lower(): v for k, v in request.headers.items()}
        await agg.ingest_pushed(sub.feed_url, bytes(body), headers)
        return Response(status_code=202)

    path = CALLBACK_PATH + "{callback_id}"
    return [Route(path, verify, methods=["GET"]), Route(path, push, methods=["POST"])]
