"""Registering Strongroom in a Keystone catalog as the ``database`` service, as Trove is:
one service (type ``database``, name ``trove``) and an endpoint per interface whose URL ends
in ``/v1.0/$(project_id)s``. Running it again changes nothing, or moves a URL that changed."""

from __future__ import annotations

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
