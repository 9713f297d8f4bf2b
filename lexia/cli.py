"""lexia-key: create, list, revoke and rotate API keys from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from lexia.db import open_db
from lexia.db.keys import KeyTable
from lexia.errors import LexiaError
from lexia.services.access.keys import KeyService, created_key_view, key_view, parse_duration
from lexia.settings import SettingsError, environment_with_dotenv, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lexia-key", description="Manage Lexia API keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key (and its tenant if new); prints it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated: llm,stt,diarization,jobs,usage,admin or *")
    create.add_argument("--tenant", default="default")
    create.add_argument("--expires-in", help="e.g. 30d, 12h, 2w")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    listing = sub.add_parser("list", help="list keys")
    listing.add_argument("--tenant", help="only this tenant")
    listing.add_argument("--include-revoked", action="store_true")
    listing.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="revoke a key now")
    revoke.add_argument("id")
    rotate = sub.add_parser("rotate", help="issue a new secret for a key and revoke the old one")
    rotate.add_argument("id")
    rotate.add_argument("--json", action="store_true")
    return parser


async def _run(args: argparse.Namespace) -> int:
    settings = load_settings(environment_with_dotenv())
    db = open_db(settings.data.database_url.reveal(), pool_size=1)
    keys = KeyService(
        KeyTable(db),
        pepper=settings.security.key_pepper.reveal(),
        previous_pepper=settings.security.key_pepper_previous.reveal(),
    )
    try:
        if args.command == "create":
            expires = None
            if args.expires_in:
                expires = datetime.now(UTC) + parse_duration(args.expires_in)
            key, plaintext = await keys.create(
                tenant_id=args.tenant,
                name=args.name,
                scopes=[s for s in args.scopes.split(",")],
                expires_at=expires,
                create_tenant=True,
            )
            _print_secret(msgspec.to_builtins(created_key_view(key, plaintext)), args.json)
        elif args.command == "list":
            found: list[Any] = []
            after = None
            while True:
                page, more = await keys.page(
                    args.tenant, limit=100, after=after, include_revoked=args.include_revoked
                )
                found += page
                if not more:
                    break
                after = page[-1].id
            if args.json:
                print(json.dumps([msgspec.to_builtins(key_view(k)) for k in found]))
            else:
                for k in found:
                    state = "revoked" if k.revoked_at else "active"
                    print(f"{k.id}  {k.prefix}…  {k.tenant_id:<16} {','.join(k.scopes):<24} {state:<8} {k.name}")
        elif args.command == "revoke":
            key = await keys.revoke(None, args.id, guard_last_admin=False)
            print(f"revoked {key.id} ({key.prefix}…)")
        else:
            key, plaintext = await keys.rotate(None, args.id)
            _print_secret(msgspec.to_builtins(created_key_view(key, plaintext)), args.json)
    finally:
        await db.dispose()
    return 0


def _print_secret(body: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(body))
        return
    print(f"id:      {body['id']}")
    print(f"tenant:  {body['tenant']}")
    print(f"scopes:  {','.join(body['scopes'])}")
    print(f"expires: {body['expires_at'] or 'never'}")
    print(f"key:     {body['key']}")
    print("Store the key now: it is shown only once.", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of bin/lexia-key."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (SettingsError, ValueError) as exc:
        print(f"lexia-key: {exc}", file=sys.stderr)
        return 2
    except LexiaError as exc:
        print(f"lexia-key: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, SQLAlchemyError) as exc:
        print(f"lexia-key: cannot reach the database ({type(exc).__name__})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
