"""What every use case a project's requests reach holds: its transactions, the time and
the policy. A use case declares the rest of its ports as fields of its own."""

from __future__ import annotations

import attrs

from strongroom.domain.ports import Clock, UnitOfWorkFactory
from strongroom.services.authorization import Authorizer


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class UseCase:
    """Ports are private attributes set from keyword arguments without the underscore
    (``uow=`` sets ``self._uow``); identity equality and no repr, as for any service."""

    _uow: UnitOfWorkFactory
    _clock: Clock
    _authz: Authorizer = attrs.field(alias="authorizer")
