"""/dashboard: sign in with a token, look at a project's backups, act on them.

Every action calls the service the API route calls, with the same request context, so the
policy is the API's: a member reaches its own project only, an admin every project. A
caller whose roles are all ``reader`` is shown no action and refused any POST. Every POST
carries the session's CSRF token (and the cookie is SameSite=Strict); a POST whose Origin
is another site is refused before that. Pages and actions make their service calls in the
caller's project's share of threads (``deps.blocking``): one tenant reloading its dashboard
holds no thread another needs."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from strongroom.api import commands
from strongroom.api.dashboard import overview
from strongroom.api.dashboard.sessions import (
    COOKIE,
    LIFETIME_SECONDS,
    LOGIN_COOKIE,
    Session,
    SessionSigner,
    same_secret,
)
from strongroom.api.deps import blocking, read
from strongroom.api.edge import EdgeSettings
from strongroom.api.errors import ERROR_TABLE
from strongroom.api.schemas import requests as schemas
from strongroom.domain.errors import BadRequestError, DomainError, PolicyNotAuthorizedError
from strongroom.domain.model import Backup, RequestContext
from strongroom.services.backups import ListFilter
from strongroom.services.container import Services
from strongroom.services.tokens import token_digest

router = APIRouter(include_in_schema=False)

MAX_FORM_BYTES = 16 * 1024
READ_ONLY_ROLES = {"reader"}
NOTICES = {
    "backup": "Backup started.",
    "delete": "Deletion requested.",
    "restore": "Restore started: the new instance is being built.",
    "signed-out": "Signed out.",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on POSTs.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("strongroom.api.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = human_bytes
    env.filters["duration"] = human_duration
    env.filters["when"] = lambda d: overview.utc(d).strftime("%Y-%m-%d %H:%M:%S UTC") if d else ""
    env.globals["percent"] = percent
    return env


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_duration(value: Any) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def percent(backup: Backup) -> int:
    p = backup.progress
    if not p.bytes_expected:
        return 0
    return int(min(100, 100 * p.bytes_done // p.bytes_expected))


# -- plumbing ---------------------------------------------------------------------------------


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _signer(request: Request) -> SessionSigner:
    signer: SessionSigner = request.app.state.dashboard_sessions
    return signer


def _page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    env: Environment = request.app.state.dashboard_templates
    html = env.get_template(name).render(**values)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


async def _signed_in(request: Request) -> tuple[Session, RequestContext] | None:
    """The session and its caller; None when there is none or its token was revoked."""
    session = _signer(request).read(request.cookies.get(COOKIE))
    if session is None:
        return None
    services = _services(request)
    # A token look-up, run where the API's authentication runs its own (no project yet).
    ctx = await read(services, services.tokens.authenticate_digest, session.token_digest)
    if ctx is None:
        return None
    return session, ctx


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not a browser's cross-site POST; the CSRF token still applies
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def _form(request: Request) -> dict[str, str]:
    edge: EdgeSettings = request.app.state.edge
    raw = b""
    try:
        with anyio.fail_after(edge.body_timeout):  # as the API: no body trickled forever
            async for piece in request.stream():
                raw += piece
                if len(raw) > MAX_FORM_BYTES:
                    raise BadRequestError("The form is too large.")
    except TimeoutError:
        raise BadRequestError("The form was not received in time.") from None
    if not raw:
        return {}
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise BadRequestError("The dashboard accepts forms only.")
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError("Malformed form.") from exc
    return {k: v[0] for k, v in parsed.items()}


def _status(exc: DomainError) -> int:
    for cls, status, _name in ERROR_TABLE:
        if isinstance(exc, cls):
            return status
    return 400


def can_act(ctx: RequestContext) -> bool:
    return not set(r.lower() for r in ctx.roles) <= READ_ONLY_ROLES


async def _action(
    request: Request,
) -> tuple[Session, RequestContext, dict[str, str]] | Response:
    """A POST's checks: same origin, signed in, CSRF token, allowed to act."""
    if not _same_origin(request):
        return _page(request, "refused.html", 403, message="Cross-site request refused.")
    signed = await _signed_in(request)
    if signed is None:
        return _redirect("/dashboard")
    session, ctx = signed
    try:
        form = await _form(request)
    except BadRequestError as exc:
        return _page(request, "refused.html", 400, message=str(exc))
    if not same_secret(form.get("csrf"), session.csrf):
        return _page(request, "refused.html", 403, message="Missing or stale form token.")
    if not can_act(ctx):
        return _page(request, "refused.html", 403, message="Your role may only read.")
    return session, ctx, form


# -- pages ------------------------------------------------------------------------------------


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    signed = await _signed_in(request)
    if signed is None:
        return _login_page(request)
    session, ctx = signed
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return await _overview(request, session, ctx, notice=notice)


async def _overview(
    request: Request,
    session: Session,
    ctx: RequestContext,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    services = _services(request)
    now = datetime.now(UTC)

    def gather() -> list[overview.ProjectOverview]:
        return [
            overview.project_overview(services, overview.project_context(ctx, p), now)
            for p in overview.visible_projects(services, ctx)
        ]

    projects = await blocking(request, ctx, gather)
    return _page(
        request,
        "overview.html",
        status,
        ctx=ctx,
        csrf=session.csrf,
        projects=projects,
        can_act=can_act(ctx),
        notice=notice,
        error=error,
        now=now,
    )


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE)
    fresh = nonce is None or not 20 <= len(nonce) <= 128
    if fresh:
        nonce = secrets.token_urlsafe(32)
    response = _page(request, "login.html", status, login_csrf=nonce, error=error)
    if fresh:
        _set_cookie(request, response, LOGIN_COOKIE, str(nonce), max_age=3600)
    return response


def _set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or request.app.state.edge.secure_cookies,
    )


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    if not _same_origin(request):
        return _page(request, "refused.html", 403, message="Cross-site request refused.")
    try:
        form = await _form(request)
    except BadRequestError as exc:
        return _login_page(request, 400, str(exc))
    if not same_secret(form.get("login_csrf"), request.cookies.get(LOGIN_COOKIE) or "\x00"):
        return _login_page(request, 403, "The sign-in form expired; try again.")
    token = form.get("token", "").strip()
    services = _services(request)
    ctx = await read(services, services.tokens.authenticate, token)
    if ctx is None:
        return _login_page(request, 401, "That token was not accepted.")
    old = _signer(request).read(request.cookies.get(COOKIE))
    if old is not None:  # a new session on each sign-in
        _signer(request).end(old)
    cookie, _session = _signer(request).issue(token_digest(token))
    response = _redirect("/dashboard")
    _set_cookie(request, response, COOKIE, cookie, max_age=LIFETIME_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path="/dashboard")
    return response


@router.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    checked = await _action_any_role(request)
    if isinstance(checked, Response):
        return checked
    _signer(request).end(checked)
    response = _redirect("/dashboard?notice=signed-out")
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


async def _action_any_role(request: Request) -> Session | Response:
    """Signing out needs the CSRF token too (else a page could sign anyone out)."""
    if not _same_origin(request):
        return _page(request, "refused.html", 403, message="Cross-site request refused.")
    session = _signer(request).read(request.cookies.get(COOKIE))
    if session is None:
        return _redirect("/dashboard")
    try:
        form = await _form(request)
    except BadRequestError as exc:
        return _page(request, "refused.html", 400, message=str(exc))
    if not same_secret(form.get("csrf"), session.csrf):
        return _page(request, "refused.html", 403, message="Missing or stale form token.")
    return session


@router.get("/dashboard/backups/{backup_id}/progress")
async def progress(request: Request, backup_id: str) -> Response:
    """One running backup's bar; htmx asks again every second until it has ended."""
    signed = await _signed_in(request)
    if signed is None:
        return _page(request, "refused.html", 401, message="Signed out.")
    _session, ctx = signed
    try:
        backup = await blocking(
            request, ctx, _services(request).backups.get, ctx, backup_id=backup_id
        )
    except DomainError as exc:
        # To htmx a 200 that ends the polling; to anything else the API's status.
        status = 200 if request.headers.get("hx-request") else _status(exc)
        return _page(request, "progress.html", status, backup=None, message=str(exc))
    return _page(request, "progress.html", backup=backup)


@router.get("/dashboard/backups/{backup_id}/delete")
async def confirm_delete(request: Request, backup_id: str) -> Response:
    """What a delete takes with it, spelled out, before the button that does it."""
    signed = await _signed_in(request)
    if signed is None:
        return _redirect("/dashboard")
    session, ctx = signed
    services = _services(request)

    def plan() -> tuple[Backup, list[Backup]]:
        backup = services.backups.get(ctx, backup_id=backup_id)
        acting = overview.project_context(ctx, backup.project_id)
        family = (
            overview.instance_backups(services, acting, backup.instance_id)
            if backup.instance_id
            else services.backups.list(acting, filters=ListFilter()).items
        )
        return backup, overview.descendants(family, backup.id)

    try:
        backup, cascade = await blocking(request, ctx, plan)
    except DomainError as exc:
        return _page(request, "refused.html", _status(exc), message=str(exc))
    return _page(
        request,
        "confirm_delete.html",
        backup=backup,
        cascade=cascade,
        csrf=session.csrf,
        can_act=can_act(ctx),
    )


@router.post("/dashboard/backups/{backup_id}/delete")
async def delete_backup(request: Request, backup_id: str) -> Response:
    checked = await _action(request)
    if isinstance(checked, Response):
        return checked
    session, ctx, _form_values = checked
    services = _services(request)

    def delete() -> None:
        backup = services.backups.get(ctx, backup_id=backup_id)
        services.backups.delete(
            overview.project_context(ctx, backup.project_id), backup_id=backup_id
        )

    return await _run(request, session, ctx, delete, "delete")


@router.post("/dashboard/instances/{instance_id}/backups")
async def back_up_now(request: Request, instance_id: str) -> Response:
    checked = await _action(request)
    if isinstance(checked, Response):
        return checked
    session, ctx, form = checked
    services = _services(request)
    body: dict[str, Any] = {
        "backup": {
            "name": form.get("name") or f"dashboard {datetime.now(UTC):%Y-%m-%d %H:%M:%S}",
            "instance": instance_id,
            "incremental": 1 if form.get("incremental") == "on" else 0,
        }
    }

    def create() -> None:
        schemas.validate(schemas.BACKUP_CREATE, body)
        view = services.instances.get(ctx, instance_id=instance_id)
        acting = overview.project_context(ctx, view.instance.project_id)
        command = commands.create_backup(body["backup"])
        services.backups.create(acting, command=command, parent_page=(0, None))

    return await _run(request, session, ctx, create, "backup")


@router.post("/dashboard/backups/{backup_id}/restore")
async def restore(request: Request, backup_id: str) -> Response:
    checked = await _action(request)
    if isinstance(checked, Response):
        return checked
    session, ctx, form = checked
    services = _services(request)

    def create() -> None:
        backup = services.backups.get(ctx, backup_id=backup_id)
        version = services.datastores.find_version(backup.datastore_version_id)
        if version is None:
            raise BadRequestError("The backup's datastore is not known here.")
        instance: dict[str, Any] = {
            "name": form.get("name") or f"{backup.name} restored",
            "datastore": {"type": version.datastore_name, "version": version.name},
            "restorePoint": {"backupRef": backup.id},
        }
        flavors = services.instances.flavors()
        if flavors:  # the smallest the operator offers; a managed restore needs no more
            instance["flavorRef"] = flavors[0].id
        body = {"instance": instance}
        schemas.validate(schemas.INSTANCE_CREATE, body)
        acting = overview.project_context(ctx, backup.project_id)
        services.instances.create(acting, command=commands.create_instance(body["instance"]))

    return await _run(request, session, ctx, create, "restore")


async def _run(
    request: Request, session: Session, ctx: RequestContext, call: Any, notice: str
) -> Response:
    """Run an action in the caller's project's share of threads (as the API does); a
    refusal is shown on the overview with the API's status."""
    try:
        await blocking(request, ctx, call)
    except PolicyNotAuthorizedError as exc:
        return await _overview(request, session, ctx, error=str(exc), status=403)
    except DomainError as exc:
        return await _overview(request, session, ctx, error=str(exc), status=_status(exc))
    return _redirect(f"/dashboard?notice={notice}")
