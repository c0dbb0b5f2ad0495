"""The admin API's OpenAPI 3.1 document (served at /admin/openapi.json), generated from the structs that
validate the requests (http/admin_schema.py): required fields, ranges and the 400s are the handlers' own."""

from __future__ import annotations

from typing import Any

import msgspec

from sluice.channels.catalog import NAME_PATTERN
from sluice.config import ModelConfig, ProviderConfig
from sluice.http.admin_schema import KeyFields, LedgerParams, NewKey, ProbeRequest, TopUp

_REF = "#/components/schemas/{name}"
_, _SCHEMAS = msgspec.json.schema_components([KeyFields, NewKey, TopUp, LedgerParams], ref_template=_REF)
_LEDGER_PARAMS: dict[str, Any] = _SCHEMAS.pop("LedgerParams")["properties"]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: an absent parameter is the struct's None, so drop the null branch."""
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _op(summary: str, *, body: str | None = None, params: tuple[str, ...] = (), status: str = "200",
        path_id: str | tuple[str, ...] | None = None, body_required: bool = True) -> dict[str, Any]:
    error = {"$ref": "#/components/responses/Error"}
    op: dict[str, Any] = {"summary": summary, "security": [{"admin": []}],
                          "responses": {status: {"description": "OK", "content": {"application/json": {}}},
                                        "400": error, "401": error, "404": error}}
    ps = [{"name": p, "in": "query", "required": False,
           "schema": _not_null(_LEDGER_PARAMS[p]) if p in _LEDGER_PARAMS else {"type": "string"}} for p in params]
    for name in (path_id,) if isinstance(path_id, str) else path_id or ():
        ps.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
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

# Accounts, groups and redemption codes (sluice/http/account_routes.py).
OPENAPI["components"]["schemas"].update({
    "AccountFields": {"type": "object", "additionalProperties": False, "properties": {
        "name": {"type": "string"}, "group": {"type": "string"}, "enabled": {"type": "boolean"},
        "balance": {"type": ["string", "number"], "description": "on create only: the opening top-up"}}},
    "Credit": {"type": "object", "required": ["amount"], "properties": {
        "amount": {"type": ["string", "number"], "description": "money; negative allowed for adjust"},
        "note": {"type": "string"}}},
    "GroupFields": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string"}, "multiplier": {"type": ["string", "number"]},
        "models": {"type": "object", "additionalProperties": {"type": ["string", "number"]},
                   "description": "per-model multipliers over the group's"}}},
    "CodeBatch": {"type": "object", "required": ["count", "amount"], "additionalProperties": False, "properties": {
        "count": {"type": "integer", "minimum": 1, "maximum": 10000}, "amount": {"type": ["string", "number"]},
        "expires_at": {"type": ["number", "null"]}, "group": {"type": ["string", "null"]}}},
})
OPENAPI["paths"].update({
    "/admin/accounts": {"get": _op("List accounts with balance and spend"),
                        "post": _op("Create an account", body="AccountFields", status="201")},
    "/admin/accounts/{id}": {"get": _op("One account and its key ids", path_id="id"),
                             "patch": _op("Rename, regroup, enable or disable", body="AccountFields", path_id="id")},
    "/admin/accounts/{id}/topup": {"post": _op("Add to the balance", body="Credit", path_id="id")},
    "/admin/accounts/{id}/adjust": {"post": _op("Correct the balance up or down", body="Credit", path_id="id")},
    "/admin/accounts/{id}/history": {"get": _op("Balance events and daily charges, newest first",
                                                params=("since", "limit"), path_id="id")},
    "/admin/groups": {"get": _op("List groups"), "post": _op("Create or change a group", body="GroupFields")},
    "/admin/groups/{name}": {"get": _op("One group", path_id="name")},
    "/admin/codes": {"get": _op("List redemption codes (hash prefixes, never the codes)", params=("batch_id", "limit")),
                     "post": _op("Create a batch; the codes (and a CSV) are in this response only",
                                 body="CodeBatch", status="201")},
})

# Channels: key pools and the runtime catalog (sluice/http/channel_routes.py). A catalog body is the config
# file's provider or model table (the same structs validate it), its name in the path, plus `enabled`.
_, _CONFIG = msgspec.json.schema_components([ProviderConfig, ModelConfig, ProbeRequest], ref_template=_REF)


def _catalog_body(name: str, title: str) -> dict[str, Any]:
    schema = {**_CONFIG.pop(name), "title": title}
    schema["required"] = [f for f in schema.get("required", []) if f != "name"]
    props = {k: v for k, v in schema["properties"].items() if k != "name"}  # the path's (a body may repeat it)
    schema["properties"] = {**props, "enabled": {"type": "boolean", "default": True}}
    return schema


OPENAPI["components"]["schemas"].update({"CatalogProvider": _catalog_body("ProviderConfig", "CatalogProvider"),
                                         "CatalogModel": _catalog_body("ModelConfig", "CatalogModel"), **_CONFIG})
OPENAPI["paths"].update({
    "/admin/channels": {"get": _op("Key pools per provider: keys masked, their state and last error")},
    "/admin/channels/{provider}/test": {"post": _op("Probe a provider with one key (or the next) now",
                                                    body="ProbeRequest", path_id="provider", body_required=False)},
    "/admin/channels/{provider}/keys/{key_id}/enable": {"post": _op("Put a key back in its pool",
                                                                   path_id=("provider", "key_id"))},
    "/admin/channels/{provider}/keys/{key_id}/disable": {"post": _op("Take a key out of its pool",
                                                                    path_id=("provider", "key_id"))},
    "/admin/catalog": {"get": _op("Providers and models: the file's with the database's laid over them")},
    **{f"/admin/catalog/{kind}s/{{name}}": {
        "get": _op(f"One {kind}: its source, whether it serves, its config (secrets masked)", path_id="name"),
        "put": _op(f"Create or replace a {kind} in the database (it overrides the file's of that name)",
                   body=body, path_id="name"),
        "delete": _op(f"Delete a {kind} from the database (the file's of that name, if any, returns)",
                      path_id="name")} for kind, body in (("provider", "CatalogProvider"), ("model", "CatalogModel"))},
})
# A catalog name has a pattern of its own (else a 400); a change the rest of the configuration refuses (a
# target naming no provider, keys but no channels.secret) is well-formed but refused as things stand: a 409.
for _kind in ("providers", "models"):
    for _method, _operation in OPENAPI["paths"][f"/admin/catalog/{_kind}/{{name}}"].items():
        _operation["parameters"][0]["schema"] = {"type": "string", "pattern": f"^{NAME_PATTERN}$"}
        if _method != "get":
            _operation["responses"]["409"] = {"$ref": "#/components/responses/Error"}
