"""Authorization through oslo.policy with Trove's default rules.

An operator policy file (YAML or JSON) overrides any rule."""

from __future__ import annotations

import functools
from pathlib import Path

from oslo_config import cfg
from oslo_policy import policy

from strongroom.domain.errors import PolicyNotAuthorizedError
from strongroom.domain.model import ProjectId, RequestContext

ADMIN_OR_OWNER = "rule:admin_or_owner"
ANYONE = ""
# Keystone's ``reader`` role alone reads but does not change (Trove's defaults); a member
# token also carries ``reader`` (an implied role), and tokens without it are writers.
ADMIN_OR_WRITER = "rule:admin or (project_id:%(tenant)s and rule:project_writer)"

DEFAULT_RULES = [
    policy.RuleDefault("admin", "role:admin or is_admin:True"),
    policy.RuleDefault("admin_or_owner", "rule:admin or project_id:%(tenant)s"),
    policy.RuleDefault("context_is_admin", "role:admin"),
    policy.RuleDefault("project_writer", "role:member or role:admin or not role:reader"),
    policy.RuleDefault("backup:create", ADMIN_OR_WRITER),
    policy.RuleDefault("backup:index", ADMIN_OR_OWNER),
    # Trove's "role:admin", through the rule: a policy file narrowing ``admin`` narrows it too.
    policy.RuleDefault("backup:index:all_projects", "rule:admin"),
    policy.RuleDefault("backup:show", ADMIN_OR_OWNER),
    policy.RuleDefault("backup:delete", ADMIN_OR_WRITER),
    policy.RuleDefault("backup_strategy:create", ADMIN_OR_WRITER),
    policy.RuleDefault("backup_strategy:index", ADMIN_OR_OWNER),
    policy.RuleDefault("backup_strategy:delete", ADMIN_OR_WRITER),
    policy.RuleDefault("instance:create", ADMIN_OR_WRITER),
    # Placing an instance on a chosen worker host (extension field "host") is the operator's.
    policy.RuleDefault("instance:create:host", "rule:admin"),
    policy.RuleDefault("instance:index", ADMIN_OR_OWNER),
    policy.RuleDefault("instance:detail", ADMIN_OR_OWNER),
    policy.RuleDefault("instance:show", ADMIN_OR_OWNER),
    policy.RuleDefault("instance:delete", ADMIN_OR_WRITER),
    policy.RuleDefault("instance:backups", ADMIN_OR_OWNER),
    # Point-in-time archiving of an instance (this service's extension).
    policy.RuleDefault("instance:pitr:show", ADMIN_OR_OWNER),
    policy.RuleDefault("instance:pitr:update", ADMIN_OR_WRITER),
    policy.RuleDefault("quota:show", ADMIN_OR_OWNER),
    policy.RuleDefault("quota:update", "rule:admin"),
    policy.RuleDefault("datastore:index", ANYONE),
    policy.RuleDefault("datastore:show", ANYONE),
    policy.RuleDefault("datastore:version_index", ANYONE),
    policy.RuleDefault("datastore:version_show", ANYONE),
    policy.RuleDefault("datastore:version_show_by_uuid", ANYONE),
    policy.RuleDefault("flavor:index", ANYONE),
    policy.RuleDefault("flavor:show", ANYONE),
    # Users, databases and root of a managed instance: Trove's rule names.
    *(
        policy.RuleDefault(
            f"instance:extension:{kind}:{action}",
            ADMIN_OR_OWNER if action in ("index", "show") else ADMIN_OR_WRITER,
        )
        for kind, actions in (
            ("user", ("create", "delete", "index", "show", "update", "update_all")),
            ("user_access", ("update", "delete", "index")),
            ("database", ("create", "delete", "index", "show")),
            ("root", ("create", "delete", "index")),
        )
        for action in actions
    ),
    policy.RuleDefault("backup:verify", ADMIN_OR_WRITER),
    policy.RuleDefault("backup:drill", ADMIN_OR_WRITER),
    policy.RuleDefault("backup:copy", ADMIN_OR_WRITER),
    policy.RuleDefault("backup_schedule:create", ADMIN_OR_WRITER),
    policy.RuleDefault("backup_schedule:index", ADMIN_OR_OWNER),
    policy.RuleDefault("backup_schedule:show", ADMIN_OR_OWNER),
    policy.RuleDefault("backup_schedule:update", ADMIN_OR_WRITER),
    policy.RuleDefault("backup_schedule:delete", ADMIN_OR_WRITER),
    policy.RuleDefault("backup_schedule:run", ADMIN_OR_WRITER),
    policy.RuleDefault("backup_schedule:prune", ADMIN_OR_WRITER),
]


class Authorizer:
    def __init__(self, policy_file: Path | None = None) -> None:
        conf = cfg.ConfigOpts()
        conf([], project="strongroom", default_config_files=[], default_config_dirs=[])
        self._enforcer = policy.Enforcer(
            conf,
            policy_file=str(policy_file) if policy_file else "strongroom-policy-unset.yaml",
        )
        self._enforcer.register_defaults(DEFAULT_RULES)
        self._enforcer.load_rules()

    def caller(self, project_id: str, user_id: str, roles: tuple[str, ...]) -> RequestContext:
        """An authenticated caller, with whether it is the cloud's admin (one who sees every
        project's instances and backups): the ``admin`` rule, as a policy file has it."""
        admin = self._decide("admin", project_id, user_id, roles, project_id)
        return RequestContext(ProjectId(project_id), user_id, roles, is_admin=admin)

    def allowed(self, ctx: RequestContext, rule: str, target_project: str) -> bool:
        return self._decide(rule, ctx.project_id, ctx.user_id, ctx.roles, target_project)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one Authorizer per process, rules fixed
    def _decide(
        self, rule: str, project_id: str, user_id: str, roles: tuple[str, ...], target: str
    ) -> bool:
        """oslo.policy's decision depends only on these and the loaded rules, which do not
        change while the process runs; evaluating a rule costs more than the request."""
        creds = {
            "roles": list(roles),
            "project_id": project_id,
            "user_id": user_id,
            # Trove's ``is_admin:True``: the admin role; what it grants is the rules' to say.
            "is_admin": any(role.lower() == "admin" for role in roles),
        }
        target_dict = {"tenant": target, "project_id": target}
        return bool(self._enforcer.enforce(rule, target_dict, creds))

    def enforce(self, ctx: RequestContext, rule: str, target_project: str) -> None:
        if not self.allowed(ctx, rule, target_project):
            raise PolicyNotAuthorizedError(rule)
