"""`sluice catalog list | put | delete`: the runtime providers and models, straight on the database.

The same validation and encryption as the admin API (sluice/channels/catalog.py); running servers pick
the change up within `channels.poll_seconds`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sluice.channels.catalog import Catalog
from sluice.config import Settings
from sluice.errors import SluiceError
from sluice.schema.chat import parse_json_object
from sluice.storage.base import Store


def add_parser(sub: Any, common: Any) -> None:
    c = sub.add_parser("catalog", help="providers and models managed at runtime (database over the file)")
    cs = c.add_subparsers(dest="catalog_cmd", required=True)
    ls = cs.add_parser("list", help="every provider and model with its source; upstream keys masked")
    common(ls)
    put = cs.add_parser("put", help="create or replace a provider or model from a JSON object")
    common(put)
    put.add_argument("kind", choices=["provider", "model"])
    put.add_argument("name")
    put.add_argument("body", help='the fields as in the TOML table, as JSON (e.g. \'{"kind": "openai", ...}\'); '
                                  "- reads it from stdin (keeps upstream keys out of the shell history)")
    rm = cs.add_parser("delete", help="delete a database entry (the file's entry of that name comes back)")
    common(rm)
    rm.add_argument("kind", choices=["provider", "model"])
    rm.add_argument("name")


async def run(settings: Settings, store: Store, args: argparse.Namespace) -> int:
    catalog = Catalog(settings, store, lambda _: None)
    await catalog.reload()
    try:
        if args.catalog_cmd == "put":
            body = sys.stdin.read() if args.body == "-" else args.body
            print(json.dumps(await catalog.put(args.kind, args.name, parse_json_object(body.encode())), indent=2))
        elif args.catalog_cmd == "delete":
            await catalog.delete(args.kind, args.name)
            print(f"deleted {args.kind} {args.name}")
        else:
            print(json.dumps(catalog.public(), indent=2))
    except SluiceError as exc:
        print(f"sluice: {exc.message}", file=sys.stderr)
        return 1
    return 0
