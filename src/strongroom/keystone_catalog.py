"""Registering Strongroom in a Keystone catalog as the ``database`` service, as Trove is:
one service (type ``database``, name ``trove``) and an endpoint per interface whose URL ends
in ``/v1.0/$(project_id)s``. Running it again changes nothing, or moves a URL that changed."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

SERVICE_TYPE = "database"
SERVICE_NAME = "trove"
PROJECT_SUFFIX = "/v1.0/$(project_id)s"


def endpoint_url(base: str) -> str:
    """``http://host:8779`` → ``http://host:8779/v1.0/$(project_id)s`` (kept if given whole)."""
    base = base.rstrip("/")
    if base.endswith(PROJECT_SUFFIX):
        return base
    if base.endswith("/v1.0"):
        base = base[: -len("/v1.0")]
    return base + PROJECT_SUFFIX


@dataclass(frozen=True)
class AdminLogin:
    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"


def admin_client(login: AdminLogin, region: str) -> Any:
    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    from keystoneclient.v3 import client

    auth = v3.Password(
        auth_url=login.auth_url,
        username=login.username,
        password=login.password,
        project_name=login.project_name,
        user_domain_name=login.user_domain_name,
        project_domain_name=login.project_domain_name,
    )
    return client.Client(
        session=session.Session(auth=auth, timeout=30), interface="public", region_name=region
    )


def register(keystone: Any, region: str, urls: dict[str, str]) -> list[str]:
    """Make the catalog hold the service and one endpoint per interface in ``urls``
    (``public``, ``internal``, ``admin``); returns what was done, one line each."""
    done: list[str] = []
    services = keystone.services.list(type=SERVICE_TYPE)
    if services:
        service = services[0]
    else:
        service = keystone.services.create(
            name=SERVICE_NAME, type=SERVICE_TYPE, description="Database backups (Strongroom)"
        )
        done.append(f"created service {SERVICE_NAME} ({SERVICE_TYPE}) {service.id}")
    for interface, base in urls.items():
        url = endpoint_url(base)
        found = keystone.endpoints.list(service=service, interface=interface, region=region)
        if not found:
            keystone.endpoints.create(service=service, url=url, interface=interface, region=region)
            done.append(f"created {interface} endpoint {url}")
        elif found[0].url != url:
            keystone.endpoints.update(found[0], url=url)
            done.append(f"moved {interface} endpoint to {url}")
        else:
            done.append(f"{interface} endpoint {url} already registered")
    return done


def keystone_register(args: argparse.Namespace) -> int:
    from keystoneauth1 import exceptions as ks_exceptions

    missing = [name for name in ("username", "password", "project_name") if not getattr(args, name)]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        print(f"strongroom: keystone register needs {flags} (or OS_* variables)", file=sys.stderr)
        return 2
    login = AdminLogin(
        auth_url=args.auth_url,
        username=args.username,
        password=args.password,
        project_name=args.project_name,
        user_domain_name=args.user_domain_name,
        project_domain_name=args.project_domain_name,
    )
    urls = {"public": args.public_url}
    if args.internal_url:
        urls["internal"] = args.internal_url
    if args.admin_url:
        urls["admin"] = args.admin_url
    try:
        for line in register(admin_client(login, args.region), args.region, urls):
            print(line)
    except ks_exceptions.ClientException as exc:
        print(f"strongroom: keystone register: {exc}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: Any) -> None:
    keystone = sub.add_parser("keystone", help="OpenStack Keystone").add_subparsers(
        dest="keystone_command", required=True, metavar="COMMAND"
    )
    p = keystone.add_parser(
        "register", help="register the database service and its endpoints in the catalog"
    )
    env = os.environ.get
    p.add_argument(
        "--auth-url",
        default=env("OS_AUTH_URL"),
        required=not env("OS_AUTH_URL"),
        help="Keystone's v3 URL (default: OS_AUTH_URL)",
    )
    p.add_argument(
        "--region",
        default=env("OS_REGION_NAME", "RegionOne"),
        help="the endpoints' region (default: OS_REGION_NAME, else RegionOne)",
    )
    p.add_argument("--public-url", required=True, help="e.g. http://db.example:8779")
    p.add_argument("--internal-url", help="the internal interface's URL (default: none)")
    p.add_argument("--admin-url", help="the admin interface's URL (default: none)")
    p.add_argument(
        "--username", default=env("OS_USERNAME"), help="a Keystone admin (default: OS_USERNAME)"
    )
    p.add_argument(
        "--password",
        default=env("OS_PASSWORD"),
        help="prefer OS_PASSWORD: a command line is visible to other users",
    )
    p.add_argument(
        "--project-name",
        default=env("OS_PROJECT_NAME"),
        help="the admin's project (default: OS_PROJECT_NAME)",
    )
    p.add_argument(
        "--user-domain-name",
        default=env("OS_USER_DOMAIN_NAME", "Default"),
        help="the admin's domain (default: OS_USER_DOMAIN_NAME, else Default)",
    )
    p.add_argument(
        "--project-domain-name",
        default=env("OS_PROJECT_DOMAIN_NAME", "Default"),
        help="the project's domain (default: OS_PROJECT_DOMAIN_NAME, else Default)",
    )
    p.set_defaults(func=keystone_register)
