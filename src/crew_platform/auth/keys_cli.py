"""`crew-platform api-key create | list | revoke`: the key is printed once, on stdout alone
(`KEY=$(crew-platform api-key create ...)`), everything else on stderr."""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.exc import DBAPIError

from crew_platform.auth.api_keys import create_key, list_keys, parse_scope_list, revoke_key
from crew_platform.db import create_engine, create_sessionmaker
from crew_platform.errors import PlatformError
from crew_platform.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("api-key", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="unique name of the key")
    create.add_argument(
        "--scopes", required=True, help="comma-separated: read, write, execute, admin"
    )
    create.add_argument(
        "--subject", help="the principal it acts as (created_by, ownership); default: its name"
    )
    actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_run(args, settings))
    except PlatformError as exc:
        print(f"crew-platform api-key: {exc.message}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        print(
            f"crew-platform api-key: database error ({type(exc.orig).__name__}); "
            "has `crew-platform migrate` been run on DATABASE_URL?",
            file=sys.stderr,
        )
        return 1


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            if args.action == "create":
                created = await create_key(
                    session,
                    settings,
                    name=args.name,
                    scopes=parse_scope_list(args.scopes),
                    subject=args.subject,
                )
                print(
                    f"API key {created.name!r} (subject {created.subject!r}, scopes "
                    f"{','.join(created.scopes)}); it is shown only now:",
                    file=sys.stderr,
                )
                print(created.key)
                return 0
            if args.action == "list":
                print("name\tkey_id\tsubject\tscopes\tcreated_at\trevoked_at")
                for key in await list_keys(session):
                    revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
                    print(
                        f"{key.name}\t{key.key_id}\t{key.subject}\t{','.join(key.scopes)}\t"
                        f"{key.created_at.isoformat()}\t{revoked}"
                    )
                return 0
            if await revoke_key(session, args.name):
                print(
                    f"API key {args.name!r} revoked (servers stop taking it within "
                    f"API_KEY_CACHE_SECONDS, {settings.api_key_cache_seconds:g} s)",
                    file=sys.stderr,
                )
                return 0
            print(f"crew-platform api-key: no active key named {args.name!r}", file=sys.stderr)
            return 1
    finally:
        await engine.dispose()
