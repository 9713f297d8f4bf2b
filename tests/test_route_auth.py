"""Auth fails closed: every route is public by declaration or authenticated and scoped (walks app.routes)."""

from __future__ import annotations

import re

import pytest
from litestar import get

from lexia.api.security import ANY_KEY, PUBLIC_OPT, SCOPE_OPT
from lexia.app import create_app, undeclared_routes
from tests.conftest import bearer, make_settings
from tests.harness import TestApp
from tests.test_auth import assert_error

PUBLIC_PATHS = {"/", "/health", "/ready", "/metrics", "/openapi.json"}


def routes(api: TestApp) -> list[tuple[str, str, dict[str, object]]]:
    """(method, path with sample ids, opt) of every handler but Litestar's automatic OPTIONS ones."""
    found = []
    for route in api.app.routes:
        for handler in getattr(route, "route_handlers", ()):
            for method in sorted(set(handler.http_methods) - {"OPTIONS"}):
                path = re.sub(r"\{[^}]+\}", "x", route.path)
                found.append((method, path, handler.opt))
    return found


async def test_every_route_is_public_or_scoped(api: TestApp) -> None:
    assert undeclared_routes(api.app) == []
    public = {path for _, path, opt in routes(api) if opt.get(PUBLIC_OPT)}
    docs = {path for path in public if path == "/docs" or path.startswith("/docs/")}
    assert public - docs == PUBLIC_PATHS
    for method, path, opt in routes(api):
        assert opt.get(PUBLIC_OPT) or isinstance(opt.get(SCOPE_OPT), str), (method, path)


async def test_every_scoped_route_refuses_a_missing_key_and_a_key_without_its_scope(api: TestApp) -> None:
    _, usage_only = await api.make_key("usage")
    _, llm_only = await api.make_key("llm")
    checked = 0
    for method, path, opt in routes(api):
        if opt.get(PUBLIC_OPT):
            continue
        scope = opt[SCOPE_OPT]
        assert_error(await api.client.request(method, path), 401, "missing_api_key")
        if scope == ANY_KEY:
            continue
        other = usage_only if scope != "usage" else llm_only
        error = assert_error(await api.client.request(method, path, headers=bearer(other)), 403, "insufficient_scope")
        assert f"'{scope}'" in error["message"]
        checked += 1
    assert checked >= 35


async def test_public_routes_answer_without_a_key(api: TestApp) -> None:
    for method, path, opt in routes(api):
        if opt.get(PUBLIC_OPT):
            response = await api.client.request(method, path)
            assert response.status_code != 401, (method, path)


def test_an_app_with_an_undeclared_route_refuses_to_start() -> None:
    @get("/v1/forgotten")
    async def forgotten() -> str:
        return "served to anyone"

    app = create_app(make_settings())
    app.register(forgotten)
    assert undeclared_routes(app) == ["GET /v1/forgotten"]


@pytest.mark.parametrize("scopes", ["*", "admin"])
async def test_an_undeclared_route_is_refused_at_request_time_even_to_a_star_key(api: TestApp, scopes: str) -> None:
    @get("/v1/forgotten")
    async def forgotten() -> str:
        return "served to anyone"

    api.app.register(forgotten)
    _, key = await api.make_key(scopes)
    assert_error(await api.client.get("/v1/forgotten", headers=bearer(key)), 403, "insufficient_scope")
    assert_error(await api.client.get("/v1/forgotten"), 401, "missing_api_key")
