"""The admin API's OpenAPI 3.1 document (served at /admin/openapi.json), generated from the structs that
validate the requests (http/admin_schema.py): required fields, ranges and the 400s are the handlers' own."""

from __future__ import annotations

from typing import Any

import msgspec

from sluice.http.admin_schema import KeyFields, LedgerParams, NewKey, TopUp

_REF = "#/components/schemas/{name}"
_, _SCHEMAS = msgspec.json.schema_components([KeyFields, NewKey, TopUp, LedgerParams], ref_template=_REF)
_LEDGER_PARAMS: dict[str, Any] = _SCHEMAS.pop("LedgerParams")["properties"]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: an absent parameter is the struct's None, so drop the null branch."""
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _op(summary: str, *, body: str | None = None, params: tuple[str, ...] = (), status: str = "200",
        path_id: str | None = None, body_required: bool = True) -> dict[str, Any]:
    error = {"$ref": "#/components/responses/Error"}
    op: dict[str, Any] = {"summary": summary, "security": [{"admin": []}],
                          "responses": {status: {"description": "OK", "content": {"application/json": {}}},
                                        "400": error, "401": error, "404": error}}
    ps = [{"name": p, "in": "query", "required": False, "schema": _not_null(_LEDGER_PARAMS[p])} for p in params]
    if path_id:
        ps.append({"name": path_id, "in": "path", "required": True, "schema": {"type": "string"}})
    if ps:
        op["parameters"] = ps
    if body:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {
            "schema": {"$ref": _REF.format(name=body)}}}}
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
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["message", "type", "param", "code"], "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"},
                    "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
            **_SCHEMAS,
        },
    },
    "paths": {
        "/admin/keys": {"get": _op("List keys (never their secrets)"),
                        "post": _op("Create a key; the response carries its secret once", body="NewKey",
                                    status="201")},
        "/admin/keys/{id}": {"get": _op("One key", path_id="id"),
                             "patch": _op("Change a key's fields", body="KeyFields", path_id="id",
                                          body_required=False),
                             "delete": _op("Revoke a key", path_id="id")},
        "/admin/keys/{id}/topup": {"post": _op("Add to a key's budget", body="TopUp", path_id="id")},
        "/admin/usage": {"get": _op("Usage per key and model", params=(*_LEDGER_Q, "group"))},
        "/admin/requests": {"get": _op("The request log, newest first", params=_LEDGER_Q)},
        "/admin/requests/{request_id}": {"get": _op("One request's ledger record", path_id="request_id")},
        "/admin/providers": {"get": _op("Providers and models with target health")},
    },
}
