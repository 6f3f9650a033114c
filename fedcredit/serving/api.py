"""The HTTP API of a serving run: ``POST /v1/limits`` and ``GET /v1/health`` (docs/query.md).

A request is authenticated (bearer token of the bank this run serves), its body
checked, then handed to ``answer(query_id, ids)``, which returns the signed answer
unchanged or raises a ``QueryError`` with its status. Every request, answered or
refused, gets one line in the request log before its response leaves.
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fedcredit.serving.errors import BadQuery, Forbidden, QueryError, Unauthorized
from fedcredit.serving.requestlog import RequestLog
from fedcredit.serving.requests import MAX_IDS, parse_body
from fedcredit.serving.tokens import TokenDigests

Answer = Callable[[str, list[str]], dict]  # (query id, checked IDs) -> the signed answer
MAX_BODY = 1_000_000  # 10,000 USCCs take about 220 kB of JSON


def bank_of_request(request: Request, tokens: TokenDigests, bank: str) -> str:
    """The bank whose token the request carries; 401 without a known token, 403 for another bank's."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("no token: send 'Authorization: Bearer <token>' (fedcredit coordinator query-token)")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    owner = tokens.bank_of(token.strip())
    if owner is None:
        raise Unauthorized("unknown token")
    if owner != bank:
        raise Forbidden(f"this endpoint answers for bank {bank}'s model; the token is bank {owner}'s")
    return owner


def make_app(answer: Answer, *, bank: str, tokens: TokenDigests, log: RequestLog, max_ids: int = MAX_IDS,
             on_request: Callable[[dict], None] | None = None) -> FastAPI:
    """The endpoint of one serving run, answering for ``bank``; ``on_request`` sees each request-log row."""
    app = FastAPI(title="fedcredit limit queries", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v1/health")
    def health() -> dict:
        return {"ok": True}

    async def read_body(request: Request) -> bytes:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BODY:
            raise BadQuery(f"the body has {size:,} bytes; at most {MAX_BODY:,} (10,000 USCCs)")
        data = await request.body()
        if len(data) > MAX_BODY:
            raise BadQuery(f"the body has {len(data):,} bytes; at most {MAX_BODY:,} (10,000 USCCs)")
        return data

    @app.post("/v1/limits")
    async def limits(request: Request) -> JSONResponse:
        started = time.perf_counter()
        who, count, query_id = None, None, None
        try:
            who = bank_of_request(request, tokens, bank)
            ids = parse_body(await read_body(request), max_ids)
            count, query_id = len(ids), uuid.uuid4().hex[:16]
            doc = await anyio.to_thread.run_sync(answer, query_id, ids)
            status, content, reason = 200, doc, None
        except QueryError as exc:
            status, content, reason = exc.status, exc.body(), str(exc)
        except Exception as exc:  # noqa: BLE001 — a bug must still answer and be logged
            status, content = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
            reason = content["error"]
        row = log.write(bank=who, client=request.client.host if request.client else None, ids=count, status=status,
                        seconds=time.perf_counter() - started, reason=reason, query_id=query_id)
        if on_request is not None:
            on_request(row)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(content, status_code=status, headers=headers)
    return app
