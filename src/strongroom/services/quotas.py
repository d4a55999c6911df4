"""Per-project quotas (Trove's /mgmt/quotas) and what a project may see of them (/limits).

A project's limit is the operator's override stored in the metadata, else the configured
default (``backup_quota``, ``max_instances``). Backups count what the create path counts
(the usage row it locks); instances count the project's instances."""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.domain import quotas
from strongroom.domain.errors import BadRequestError
from strongroom.domain.model import RequestContext
from strongroom.domain.ports import QuotaRepository, UnitOfWorkFactory
from strongroom.services.authorization import Authorizer
from strongroom.services.rules import ServiceRules

BACKUPS = "backups"
INSTANCES = "instances"
RESOURCES = (BACKUPS, INSTANCES)
MAX_LIMIT = 2**31 - 1


def default_limit(rules: ServiceRules, resource: str) -> int:
    return rules.backup_quota if resource == BACKUPS else rules.instance_quota


def project_limit(
    repo: QuotaRepository, rules: ServiceRules, project_id: str, resource: str
) -> int:
    """The limit a create checks against: the project's override, else the default."""
    return repo.limits(project_id).get(resource, default_limit(rules, resource))


@dataclass(frozen=True)
class QuotaUsage:
    resource: str
    in_use: int
    reserved: int
    limit: int


class QuotaService:
    def __init__(self, uow: UnitOfWorkFactory, rules: ServiceRules, authorizer: Authorizer) -> None:
        self._uow = uow
        self._rules = rules
        self._authorizer = authorizer

    def _usage(self, project_id: str) -> list[QuotaUsage]:
        with self._uow() as uow:
            overrides = uow.quotas.limits(project_id)
            in_use = {
                BACKUPS: uow.quotas.in_use(project_id, BACKUPS),
                INSTANCES: uow.instances.count(project_id),
            }
        return [
            QuotaUsage(
                resource=name,
                in_use=in_use[name],
                reserved=0,  # creates take their quota in the same transaction: none pending
                limit=overrides.get(name, default_limit(self._rules, name)),
            )
            for name in RESOURCES
        ]

    def show(self, ctx: RequestContext, project_id: str) -> list[QuotaUsage]:
        self._authorizer.enforce(ctx, "quota:show", project_id)
        return self._usage(project_id)

    def limits(self, ctx: RequestContext) -> list[QuotaUsage]:
        """The caller's own project: what ``/limits`` reports."""
        return self._usage(ctx.project_id)

    def update(self, ctx: RequestContext, project_id: str, changes: object) -> dict[str, int]:
        self._authorizer.enforce(ctx, "quota:update", project_id)
        if not isinstance(changes, dict) or not changes:
            raise BadRequestError("'quotas' must be an object of resource names and limits.")
        checked: dict[str, int] = {}
        for name, limit in changes.items():
            if name not in RESOURCES:
                raise BadRequestError(
                    f"Quota resource '{name}' does not exist; known: {', '.join(RESOURCES)}."
                )
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise BadRequestError(f"The limit of '{name}' must be an integer.")
            if limit < quotas.UNLIMITED or limit > MAX_LIMIT:
                raise BadRequestError(
                    f"The limit of '{name}' must be -1 (unlimited) or between 0 and {MAX_LIMIT}."
                )
            checked[name] = limit
        with self._uow(write=True) as uow:
            for name, limit in checked.items():
                uow.quotas.set_limit(project_id, name, limit)
            uow.commit()
        return checked
