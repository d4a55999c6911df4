"""What a project's dashboard shows, gathered through the same services the API calls:
instances with their last good backup, backup chains as trees, running and failed
backups, schedules. Pure shaping after the service calls; no HTML here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from strongroom.domain.model import Backup, BackupState, ProjectId, RequestContext
from strongroom.domain.schedules import Schedule
from strongroom.services.backups import ListFilter
from strongroom.services.container import Services
from strongroom.services.instances import InstanceView

STALE_AFTER = timedelta(hours=26)  # a daily backup that missed its slot, with slack
MAX_PAGES = 50  # a dashboard is not an export: at most this many pages of each list


@dataclass
class ChainNode:
    backup: Backup
    children: list[ChainNode] = field(default_factory=list)

    @property
    def duration(self) -> timedelta | None:
        if self.backup.state is not BackupState.COMPLETED:
            return None
        return self.backup.updated - self.backup.created


@dataclass
class InstanceCard:
    view: InstanceView
    last_good: Backup | None
    age: timedelta | None
    chains: list[ChainNode]

    @property
    def stale(self) -> bool:
        return self.age is None or self.age > STALE_AFTER


@dataclass
class ProjectOverview:
    project_id: str
    instances: list[InstanceCard]
    running: list[Backup]
    failed: list[Backup]
    schedules: list[Schedule]
    orphans: list[ChainNode]  # chains whose instance is gone (restored, or deleted)

    def instance_name(self, instance_id: str) -> str:
        for card in self.instances:
            if card.view.instance.id == instance_id:
                return card.view.instance.name
        return instance_id


def utc(moment: datetime) -> datetime:
    """The metadata keeps UTC without a zone (SQLite); compare and print it as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def project_context(ctx: RequestContext, project_id: str) -> RequestContext:
    """The caller acting in ``project_id``: itself for a member, an admin's roles and
    standing for an admin looking at another project (the services enforce the policy
    either way)."""
    if project_id == ctx.project_id:
        return ctx
    return replace(ctx, project_id=ProjectId(project_id))


def visible_projects(services: Services, ctx: RequestContext) -> list[str]:
    """A member sees its own project; an admin every project that has tokens or backups."""
    if not ctx.is_admin:
        return [ctx.project_id]
    projects = {ctx.project_id, *(t.project_id for t in services.tokens.list())}
    projects.update(b.project_id for b in _all_backups(services, ctx, all_projects=True))
    return sorted(projects)


def _all_backups(services: Services, ctx: RequestContext, *, all_projects: bool) -> list[Backup]:
    found: list[Backup] = []
    for page in range(MAX_PAGES):
        got = services.backups.list(
            ctx, filters=ListFilter(all_projects=all_projects, offset=len(found))
        )
        found.extend(got.items)
        if not got.full or page == MAX_PAGES - 1:
            break
    return found


def _all_instances(services: Services, ctx: RequestContext) -> list[InstanceView]:
    found: list[InstanceView] = []
    for _ in range(MAX_PAGES):
        got = services.instances.list(ctx, offset=len(found), limit=None)
        found.extend(got)
        if not got:
            break
    return found


def build_chains(backups: Iterable[Backup]) -> list[ChainNode]:
    """Backups as trees: a full backup at each root, its incrementals below it. A backup
    whose parent is not in the list (deleted, or another project's) is a root."""
    nodes = {b.id: ChainNode(b) for b in backups}
    roots: list[ChainNode] = []
    for node in nodes.values():
        parent = nodes.get(node.backup.parent_id) if node.backup.parent_id else None
        (parent.children if parent is not None else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.backup.created)
    roots.sort(key=lambda n: n.backup.created, reverse=True)
    return roots


def descendants(backups: Iterable[Backup], root_id: str) -> list[Backup]:
    """Every backup below ``root_id``: what a delete of it takes along."""
    by_parent: dict[str, list[Backup]] = {}
    for b in backups:
        if b.parent_id:
            by_parent.setdefault(b.parent_id, []).append(b)
    found: list[Backup] = []
    frontier = [root_id]
    while frontier:
        children = sorted(by_parent.get(frontier.pop(), []), key=lambda b: b.created)
        found.extend(children)
        frontier.extend(c.id for c in children)
    return found


def instance_backups(services: Services, ctx: RequestContext, instance_id: str) -> list[Backup]:
    found: list[Backup] = []
    for _ in range(MAX_PAGES):
        got = services.backups.list(
            ctx, filters=ListFilter(instance_id=instance_id, offset=len(found))
        )
        found.extend(got.items)
        if not got.full:
            break
    return found


def project_overview(services: Services, ctx: RequestContext, now: datetime) -> ProjectOverview:
    backups = _all_backups(services, ctx, all_projects=False)  # ctx's project only
    instances = _all_instances(services, ctx)
    by_instance: dict[str | None, list[Backup]] = {}
    for b in backups:
        by_instance.setdefault(b.instance_id, []).append(b)
    cards = []
    for view in instances:
        own = by_instance.pop(view.instance.id, [])
        good = [b for b in own if b.state is BackupState.COMPLETED]
        last = max(good, key=lambda b: b.updated, default=None)
        age = now - utc(last.updated) if last is not None else None
        cards.append(InstanceCard(view, last, age, build_chains(own)))
    orphans = build_chains(b for rest in by_instance.values() for b in rest)
    schedules = services.schedules.list(ctx, instance_id=None) if services.schedules else []
    return ProjectOverview(
        project_id=ctx.project_id,
        instances=cards,
        running=sorted((b for b in backups if b.is_running), key=lambda b: b.created),
        failed=sorted(
            (b for b in backups if b.state in (BackupState.FAILED, BackupState.DELETE_FAILED)),
            key=lambda b: b.updated,
            reverse=True,
        ),
        schedules=sorted(schedules, key=lambda s: s.next_run_at),
        orphans=orphans,
    )
