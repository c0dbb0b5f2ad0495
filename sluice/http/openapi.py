"""The admin API's OpenAPI 3.1 document (served at /admin/openapi.json)."""

from __future__ import annotations

from typing import Any


def _op(summary: str, *, body: str | None = None, params: tuple[str, ...] = (), status: str = "200",
        path_id: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "security": [{"admin": []}],
                          "responses": {status: {"description": "OK", "content": {"application/json": {}}},
                                        "401": {"$ref": "#/components/responses/Error"},
                                        "404": {"$ref": "#/components/responses/Error"}}}
    ps = [{"name": p, "in": "query", "required": False, "schema": {"type": "string"}} for p in params]
    if path_id:
        ps.append({"name": path_id, "in": "path", "required": True, "schema": {"type": "string"}})
    if ps:
        op["parameters"] = ps
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return op


_LEDGER_Q = ("key_id", "model", "status", "since", "until", "limit")

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Sluice admin API", "version": "1",
             "description": "Keys, budgets, usage and the request log. Money is a decimal string."},
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
        "responses": {"Error": {"description": "OpenAI-shaped error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
            "KeyFields": {"type": "object", "additionalProperties": False, "properties": {
                "name": {"type": "string"}, "owner": {"type": ["string", "null"]},
                "models": {"type": ["array", "null"], "items": {"type": "string"}},
                "enabled": {"type": "boolean"}, "expires_at": {"type": ["number", "null"]},
                "budget": {"type": ["string", "number", "null"], "description": "money, e.g. \"10.00\""},
                "token_quota": {"type": ["integer", "null"]},
                "period": {"type": ["string", "null"], "enum": ["day", "week", "month", None]},
                "rpm": {"type": ["integer", "null"]}, "tpm": {"type": ["integer", "null"]},
                "max_concurrency": {"type": ["integer", "null"]}, "metadata": {"type": ["object", "null"]}}},
            "TopUp": {"type": "object", "required": ["amount"],
                      "properties": {"amount": {"type": ["string", "number"]}}},
        },
    },
    "paths": {
        "/admin/keys": {"get": _op("List keys (never their secrets)"),
                        "post": _op("Create a key; the response carries its secret once", body="KeyFields",
                                    status="201")},
        "/admin/keys/{id}": {"get": _op("One key", path_id="id"),
                             "patch": _op("Change a key's fields", body="KeyFields", path_id="id"),
                             "delete": _op("Revoke a key", path_id="id")},
        "/admin/keys/{id}/topup": {"post": _op("Add to a key's budget", body="TopUp", path_id="id")},
        "/admin/usage": {"get": _op("Usage per key and model", params=(*_LEDGER_Q, "group"))},
        "/admin/requests": {"get": _op("The request log, newest first", params=_LEDGER_Q)},
        "/admin/requests/{request_id}": {"get": _op("One request's ledger record", path_id="request_id")},
        "/admin/providers": {"get": _op("Providers and models with target health")},
    },
}
