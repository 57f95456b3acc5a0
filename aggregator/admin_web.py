"""Admin login and the admin routes of issue 7 (the guard itself is admin_guard.py).

    GET  /login            HTML form asking for the admin token
    POST /login            checks the token, sets the session cookie, redirects to /admin
    POST /logout           clears the cookie
    GET  /admin/config     JSON: which feeds.yaml is running and the last refused edit

/login and /logout sit outside /admin on purpose: they are the way in, and hand out nothing
but a cookie to whoever already knows the token.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import admin_guard as guard
from .service import Aggregator

OPENAPI_PATHS = {
    "/admin/config": {
        "get": {
            "tags": ["admin"],
            "summary": "Which feeds.yaml is running, and the errors of the last refused edit",
            "responses": {
                "200": {
                    "description": "The configuration in use",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "path": {"type": "string"},
                                    "feeds": {"type": "integer"},
                                    "topics": {"type": "integer"},
                                    "last_error": {
                                        "type": ["array", "null"],
                                        "items": {"type": "string"},
                                    },
                                },
                            }
                        }
                    },
                },
                "401": {"description": "No or wrong admin token (see the /admin guard)"},
            },
        }
    }
}

_PAGE_HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
)


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    note = f'<p role="alert">{html.escape(message)}</p>' if message else ""
    page = (
        _PAGE_HEAD + "<title>Admin login</title></head><body><h1>Admin login</h1>" + note + ""
        '<form method="post" action="/login">'
        '<label>Admin token <input type="password" name="token" autocomplete="current-password" '
        'required autofocus></label> <button type="submit">Log in</button></form></body></html>'
    )
    return HTMLResponse(page, status_code=status, headers=guard.SECURITY_HEADERS)


def routes(agg: Aggregator, failures: guard.LoginFailures | None = None) -> list[BaseRoute]:
    failed = failures or guard.LoginFailures()

    async def login_form(request: Request) -> Response:
        source = guard.admin_token()
        return _login_page(source.problem or "", 200 if source.token else 403)

    async def login(request: Request) -> Response:
        source = guard.admin_token()
        if source.token is None:
            return _login_page(source.problem or "", 403)
        client = guard.client_address(request.scope)
        wait = failed.wait(client)
        if wait:
            message, headers = guard.too_many(wait)
            page = _login_page(message, 429)
            page.headers.update(headers)
            return page
        form = await request.form()
        given = form.get("token")
        if not isinstance(given, str) or not guard.check_token(source.token, given.strip()):
            failed.failed(client, "login")
            return _login_page("wrong admin token", 401)
        resp = RedirectResponse("/admin", status_code=303, headers=guard.SECURITY_HEADERS)
        resp.set_cookie(
            guard.COOKIE,
            guard.session_value(source.token),
            max_age=guard.SESSION_MAX_AGE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return resp

    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/login", status_code=303, headers=guard.SECURITY_HEADERS)
        resp.delete_cookie(guard.COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    async def config_info(request: Request) -> Response:
        return JSONResponse(
            {
                "path": str(agg.config_path),
                "feeds": len(agg.config.feeds),
                "topics": len(agg.config.topics),
                "last_error": agg.last_config_error,
            }
        )

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/admin/config", config_info, methods=["GET"]),
    ]
