"""A bank's side of the query endpoint: one HTTPS request, the CA pinned, errors as the server gave them."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from fedcredit.common.errors import FedCreditError


def post_limits(url: str, token: str, ids: list[str], ca: Path, timeout: float = 120.0) -> dict:
    """The signed answer for ``ids`` from the endpoint at ``url`` (https://HOST:PORT); raises with the server's
    status and reason."""
    if not url.startswith("https://"):
        raise FedCreditError(f"the query endpoint must be https://HOST:PORT, got {url!r}")
    if not Path(ca).is_file():
        raise FedCreditError(f"CA certificate {ca} is missing (the federation's certs folder)")
    try:
        reply = httpx.post(url.rstrip("/") + "/v1/limits", json={"uscc": ids}, verify=ssl.create_default_context(cafile=str(ca)), timeout=timeout,
                           headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise FedCreditError(f"the query endpoint {url} cannot be reached: {type(exc).__name__}: {exc}") from None
    try:
        doc = reply.json()
    except ValueError:
        doc = {"error": reply.text[:300]}
    if reply.status_code != 200:
        where = f" (node {doc['node']})" if isinstance(doc, dict) and doc.get("node") else ""
        reason = doc.get("error") if isinstance(doc, dict) else doc
        raise FedCreditError(f"the query endpoint answered {reply.status_code}{where}: {reason}")
    if not isinstance(doc, dict):
        raise FedCreditError("the query endpoint answered 200 with a body that is not a JSON object")
    return doc
