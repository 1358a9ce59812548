"""The search server: a JSON API and a single web page over one index.

- ``GET /``                          the search page
- ``GET /api/search?q=...&k=10``     ranked hits ``{rank, item, path, score, url}`` and timings, as JSON
- ``GET /api/info``                  index size, model, limits and example queries
- ``GET /images/{path}``             an indexed image; only paths listed in the index are served
- ``GET /healthz``                   liveness
- ``GET /api/docs``                  the endpoints, read from ``/openapi.json`` by a page served from the
                                     package (works offline; FastAPI's Swagger UI loads from a CDN)

Malformed requests (empty or over-long query, k out of range or not a number) get a 422 whose ``detail``
is one readable sentence.

With a ``token`` every path but ``/healthz`` needs it: ``Authorization: Bearer TOKEN`` (scripts), or the
cookie that opening ``/?token=TOKEN`` sets (browsers: the page, its API calls and its images); anything
else gets a 401 that says how to pass it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from cpcl.retrieval.service import EXAMPLE_QUERIES, MAX_K, MAX_QUERY_CHARS, QueryError, SearchService
from cpcl.version import __version__

PAGE = Path(__file__).parent / "static" / "index.html"
API_PAGE = Path(__file__).parent / "static" / "api.html"


TOKEN_COOKIE = "cpcl_token"
_NEEDS_TOKEN = ("this server needs its token: send the header 'Authorization: Bearer TOKEN', or open "
                "/?token=TOKEN in a browser (whoever runs the server has it)")


def image_url(path: str) -> str:
    return "/images/" + quote(path)


def _require_token(app: FastAPI, token: str) -> None:
    """Refuse every request but ``/healthz`` that does not carry ``token`` (see the module's docstring)."""
    expected = token.encode()

    def matches(offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), expected)

    def refused(path: str) -> Response:
        if path in ("/", "/api/docs"):
            return HTMLResponse(f"<!doctype html><title>cpcl search</title><p>{_NEEDS_TOKEN}.</p>", status_code=401)
        return JSONResponse({"detail": _NEEDS_TOKEN}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def check(request: Request, call_next) -> Response:
        path = request.url.path
        if path == "/healthz":
            return await call_next(request)
        if path == "/" and "token" in request.query_params:  # a browser's first visit: trade it for a cookie
            if not matches(request.query_params["token"]):
                return refused(path)
            response = RedirectResponse("/", status_code=303)  # the token leaves the address bar and history
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        header = request.headers.get("authorization", "")
        offered = header[7:] if header[:7].lower() == "bearer " else request.cookies.get(TOKEN_COOKIE)
        return await call_next(request) if matches(offered) else refused(path)


def build_app(service: SearchService, examples: Sequence[str] = EXAMPLE_QUERIES, token: str | None = None) -> FastAPI:
    app = FastAPI(title="cpcl search", version=__version__, docs_url=None, redoc_url=None)
    if token is not None:
        _require_token(app, token)
    index = service.index
    root = index.root.resolve()
    page, api_page = PAGE.read_text(), API_PAGE.read_text()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.exception_handler(QueryError)
    async def _bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return HTMLResponse(api_page)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/api/info", summary="the index size, the model, the limits and the example queries")
    def info() -> dict:
        model = {k: index.manifest["model"][k] for k in ("fingerprint", "arch", "embed_dim")}
        return {"images": len(index), "kind": index.kind, "model": model,
                "max_k": MAX_K, "max_query_chars": MAX_QUERY_CHARS, "examples": list(examples)}

    @app.get("/api/search", summary="rank the gallery for a description: hits with scores and image URLs")
    async def search(q: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS,
                                    description="what the person looks like"),
                     k: int = Query(10, ge=1, le=MAX_K, description="number of results")) -> Response:
        result = await service.search_async(q, k)
        out = result.as_dict()
        for hit in out["hits"]:
            hit["url"] = image_url(hit["path"])
        # serialised here: the hits are plain JSON already, and FastAPI's generic encoder costs more than the search
        return Response(json.dumps(out), media_type="application/json")

    @app.get("/images/{path:path}", include_in_schema=False)
    def image(path: str):
        item = index.item_of(path)
        if item is None:
            return JSONResponse({"detail": "no such image in this index"}, status_code=404)
        file = index.absolute_path(item).resolve()
        # the index lists only files under its root; a file replaced by a link pointing out is not served
        if not file.is_relative_to(root) or not file.is_file():
            return JSONResponse({"detail": "image is missing or outside the index root"}, status_code=404)
        return FileResponse(file, headers={"Cache-Control": "max-age=3600"})

    return app
