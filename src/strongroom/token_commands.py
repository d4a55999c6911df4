"""`strongroom token create | list | revoke`: the embedded token store, from the shell."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from strongroom.config import Settings

SettingsOf = Callable[[argparse.Namespace], Settings]


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    settings_of: SettingsOf,
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``common`` adds the --data-dir and --config options every service command takes."""
    token = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="token_command", required=True, metavar="COMMAND"
    )
    p = token.add_parser("create", help="print a new token")
    common(p)
    p.add_argument("--project-id", required=True, help="the project the token acts for")
    p.add_argument("--user-id", help="the user recorded with the token (default: the project)")
    p.add_argument(
        "--role",
        choices=["member", "admin"],
        default="member",
        help="member: the project's own resources; admin: every project's (default: member)",
    )
    p.set_defaults(func=lambda args: token_create(args, settings_of))
    p = token.add_parser("list", help="list tokens (never their values)")
    common(p)
    p.set_defaults(func=lambda args: token_list(args, settings_of))
    p = token.add_parser("revoke", help="revoke a token by id")
    common(p)
    p.add_argument("token_id", help="the token's id, as `strongroom token list` shows it")
    p.set_defaults(func=lambda args: token_revoke(args, settings_of))


def token_create(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from strongroom.bootstrap import build_tokens

    tokens = build_tokens(settings_of(args))
    issued = tokens.create(
        project_id=args.project_id, user_id=args.user_id or args.project_id, roles=(args.role,)
    )
    print(issued.token)
    return 0


def token_list(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from rich.console import Console
    from rich.table import Table

    from strongroom.bootstrap import build_tokens

    table = Table("id", "project", "user", "roles", "created", "revoked")
    for record in build_tokens(settings_of(args)).list():
        table.add_row(
            record.id,
            record.project_id,
            record.user_id,
            ",".join(record.roles),
            record.created.isoformat(),
            record.revoked.isoformat() if record.revoked else "",
        )
    # Full width when piped, so ids are never cut short.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def token_revoke(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from strongroom.bootstrap import build_tokens
    from strongroom.domain.errors import NotFoundError

    try:
        build_tokens(settings_of(args)).revoke(args.token_id)
    except NotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0
