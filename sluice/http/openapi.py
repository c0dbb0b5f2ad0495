"""The admin API's OpenAPI 3.1 document (served at /admin/openapi.json), generated from the structs that
validate the requests (http/admin_schema.py): required fields, ranges and the statuses are the handlers' own."""

from __future__ import annotations

from typing import Any

import msgspec

from sluice.channels.catalog import NAME_PATTERN
from sluice.config import ModelConfig, ProviderConfig
from sluice.http import account_schema as acct
from sluice.http.admin_schema import KeyFields, LedgerParams, NewKey, ProbeRequest, TopUp

_REF = "#/components/schemas/{name}"
_, _SCHEMAS = msgspec.json.schema_components(
    [KeyFields, NewKey, TopUp, LedgerParams, acct.AccountFields, acct.NewAccount, acct.Credit, acct.Adjustment,
     acct.GroupFields, acct.CodeBatch, acct.HistoryParams, acct.CodeParams], ref_template=_REF)
# Query structs become parameters, not schemas of their own.
_QUERIES: dict[str, dict[str, Any]] = {q: _SCHEMAS.pop(q)["properties"]
                                        for q in ("LedgerParams", "HistoryParams", "CodeParams")}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: an absent parameter is the struct's None, so drop the null branch."""
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _op(summary: str, *, body: str | None = None, query: str = "LedgerParams", params: tuple[str, ...] = (),
        status: str = "200", path_id: str | tuple[str, ...] | None = None, body_required: bool = True,
        errors: tuple[str, ...] = ()) -> dict[str, Any]:
    """One operation; `errors` are the statuses besides 401 that the handler really returns."""
    error = {"$ref": "#/components/responses/Error"}
    op: dict[str, Any] = {"summary": summary, "security": [{"admin": []}],
                          "responses": {status: {"description": "OK", "content": {"application/json": {}}},
                                        **{e: error for e in sorted({"401", *errors})}}}
    ps = [{"name": p, "in": "query", "required": False, "schema": _not_null(_QUERIES[query][p])} for p in params]
    for name in (path_id,) if isinstance(path_id, str) else path_id or ():
        ps.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
    if ps:
        op["parameters"] = ps
    if body:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {
            "schema": {"$ref": _REF.format(name=body)}}}}
    return op


_LEDGER_Q = ("key_id", "model", "status", "since", "until", "limit")
_BAD = ("400",)                 # a body or query out of its schema
_NONE = ("404",)                # the path names nothing
_BAD_REF = ("400", "404")       # both; a body's reference to a missing account is a 404 naming `account_id`
_CAPPED = ("400", "404", "409")  # and a top-up past the 10^9 money cap: well-formed, refused by the state

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
                                    status="201", errors=_BAD_REF)},
        "/admin/keys/{id}": {"get": _op("One key", path_id="id", errors=_NONE),
                             "patch": _op("Change a key's fields", body="KeyFields", path_id="id",
                                          body_required=False, errors=_BAD_REF),
                             "delete": _op("Revoke a key", path_id="id", errors=_NONE)},
        "/admin/keys/{id}/topup": {"post": _op("Add to a key's budget", body="TopUp", path_id="id",
                                               errors=_CAPPED)},
        "/admin/usage": {"get": _op("Usage per key and model", params=(*_LEDGER_Q, "group"), errors=_BAD)},
        "/admin/requests": {"get": _op("The request log, newest first", params=_LEDGER_Q, errors=_BAD)},
        "/admin/requests/{request_id}": {"get": _op("One request's ledger record", path_id="request_id",
                                                    errors=_NONE)},
        "/admin/providers": {"get": _op("Providers and models with target health")},
        # Accounts, groups and redemption codes (sluice/http/account_routes.py).
        "/admin/accounts": {"get": _op("List accounts with balance and spend"),
                            "post": _op("Create an account", body="NewAccount", status="201", errors=_BAD)},
        "/admin/accounts/{id}": {"get": _op("One account and its key ids", path_id="id", errors=_NONE),
                                 "patch": _op("Rename, regroup, enable or disable", body="AccountFields",
                                              path_id="id", body_required=False, errors=_BAD_REF)},
        "/admin/accounts/{id}/topup": {"post": _op("Add to the balance", body="Credit", path_id="id",
                                                   errors=_CAPPED)},
        "/admin/accounts/{id}/adjust": {"post": _op("Correct the balance up or down (never by zero)",
                                                    body="Adjustment", path_id="id", errors=_CAPPED)},
        "/admin/accounts/{id}/history": {"get": _op("Balance events and daily charges, newest first",
                                                    query="HistoryParams", params=("since", "limit"),
                                                    path_id="id", errors=_BAD_REF)},
        "/admin/groups": {"get": _op("List groups"),
                          "post": _op("Create or change a group", body="GroupFields", errors=_BAD)},
        "/admin/groups/{name}": {"get": _op("One group", path_id="name", errors=_NONE)},
        "/admin/codes": {"get": _op("List redemption codes (hash prefixes, never the codes)", query="CodeParams",
                                    params=("batch_id", "limit"), errors=_BAD),
                         "post": _op("Create a batch; the codes (and a CSV) are in this response only",
                                     body="CodeBatch", status="201", errors=("400", "409"))},
    },
}

# Links from what creates (or lists) a thing to the routes that take its id, so that a client generator, and
# schemathesis's stateful phase, can follow a created account, key or group instead of guessing ids.
_LINKS: dict[tuple[str, str, str], tuple[str, str, tuple[str, ...]]] = {
    ("/admin/accounts", "post", "201"): ("id", "$response.body#/id", (
        "/admin/accounts/{id}", "/admin/accounts/{id}/topup", "/admin/accounts/{id}/adjust",
        "/admin/accounts/{id}/history")),
    ("/admin/keys", "post", "201"): ("id", "$response.body#/id", ("/admin/keys/{id}", "/admin/keys/{id}/topup")),
    ("/admin/groups", "post", "200"): ("name", "$response.body#/name", ("/admin/groups/{name}",)),
    ("/admin/requests", "get", "200"): ("request_id", "$response.body#/data/0/request_id",
                                        ("/admin/requests/{request_id}",)),
}


def _operation_ids_and_links(paths: dict[str, dict[str, Any]]) -> None:
    for path, ops in paths.items():
        for method, op in ops.items():     # "/admin/accounts/{id}/topup" POST: postAccountsIdTopup
            op["operationId"] = method + "".join(w.strip("{}").title().replace("_", "") for w in path.split("/")[2:])
    for (path, method, status), (param, expr, targets) in _LINKS.items():
        paths[path][method]["responses"][status]["links"] = {
            op["operationId"]: {"operationId": op["operationId"], "parameters": {param: expr}}
            for target in targets for op in paths[target].values()}



# Channels: key pools and the runtime catalog (sluice/http/channel_routes.py). A catalog body is the config
# file's provider or model table (the same structs validate it), its name in the path, plus `enabled`.
_, _CONFIG = msgspec.json.schema_components([ProviderConfig, ModelConfig, ProbeRequest], ref_template=_REF)


def _catalog_body(name: str, title: str) -> dict[str, Any]:
    schema = {**_CONFIG.pop(name), "title": title}
    schema["required"] = [f for f in schema.get("required", []) if f != "name"]
    props = {k: v for k, v in schema["properties"].items() if k != "name"}  # the path's (a body may repeat it)
    schema["properties"] = {**props, "enabled": {"type": "boolean", "default": True}}
    return schema


_KEY = ("provider", "key_id")
_PROVIDER_EXAMPLES = [{"kind": "openai", "base_url": "https://api.openai.com/v1", "api_keys": ["sk-..."]},
                      {"kind": "simulated", "ttft_ms": 200, "tokens_per_second": 40}]
OPENAPI["components"]["schemas"].update({"CatalogProvider": {**_catalog_body("ProviderConfig", "CatalogProvider"),
                                                             "examples": _PROVIDER_EXAMPLES},
                                         "CatalogModel": _catalog_body("ModelConfig", "CatalogModel"), **_CONFIG})
OPENAPI["paths"].update({
    "/admin/channels": {"get": _op("Key pools per provider: keys masked, their state and last error")},
    "/admin/channels/{provider}/test": {"post": _op("Probe a provider with one key (or the next) now",
                                                    body="ProbeRequest", path_id="provider", body_required=False,
                                                    errors=("400", "404", "409"))},  # 409: no model to probe
    "/admin/channels/{provider}/keys/{key_id}/enable": {"post": _op("Put a key back in its pool", path_id=_KEY,
                                                                   errors=_NONE)},
    "/admin/channels/{provider}/keys/{key_id}/disable": {"post": _op("Take a key out of its pool", path_id=_KEY,
                                                                    errors=_NONE)},
    "/admin/catalog": {"get": _op("Providers and models: the file's with the database's laid over them")},
    # a change the rest of the configuration refuses (a target naming no provider, keys without
    # channels.secret, a delete that strands a model) is well-formed but refused as things stand: a 409
    **{f"/admin/catalog/{kind}s/{{name}}": {
        "get": _op(f"One {kind}: its source, whether it serves, its config (secrets masked)", path_id="name",
                   errors=_NONE),
        "put": _op(f"Create or replace a {kind} in the database (it overrides the file's of that name)",
                   body=body, path_id="name", errors=("400", "409")),
        "delete": _op(f"Delete a {kind} from the database (the file's of that name, if any, returns)",
                      path_id="name", errors=("404", "409"))}
       for kind, body in (("provider", "CatalogProvider"), ("model", "CatalogModel"))},
})
for _kind in ("providers", "models"):   # a catalog name has a pattern of its own (else a 400)
    for _operation in OPENAPI["paths"][f"/admin/catalog/{_kind}/{{name}}"].values():
        _operation["parameters"][0]["schema"] = {"type": "string", "pattern": f"^{NAME_PATTERN}$"}

_operation_ids_and_links(OPENAPI["paths"])


def _link(path: str, method: str, params: dict[str, str], targets: tuple[str, ...]) -> None:
    """Links with more than one parameter (a pool's provider and key), or to routes of one kind."""
    OPENAPI["paths"][path][method]["responses"]["200"]["links"] = {
        op["operationId"]: {"operationId": op["operationId"], "parameters": params}
        for target in targets for op in OPENAPI["paths"][target].values()}


_link("/admin/channels", "get", {"provider": "$response.body#/data/0/provider",
                                 "key_id": "$response.body#/data/0/keys/0/id"},
      ("/admin/channels/{provider}/keys/{key_id}/enable", "/admin/channels/{provider}/keys/{key_id}/disable"))
for _kind in ("providers", "models"):
    _path = f"/admin/catalog/{_kind}/{{name}}"
    _link(_path, "put", {"name": "$response.body#/name"}, (_path,))
