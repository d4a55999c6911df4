"""Users, databases and root when the API process holds no instance (the scaled-out layout).

An API process finds the instance as the caller may see it (another project's is 404 here,
before anything is sent), then relays the call to the worker of the instance's host, which
runs it with its own :class:`AccountService` (policy, datastore, state, the server) and
answers. Requests and answers carry passwords (users' passwords, root's generated one), so
both are sealed with a key derived from the master key, bound to the call's id and to
their direction; a request also carries its deadline, after which the worker refuses it, so
a message that waited in the broker is never acted on once its caller has been answered
503. What reaches the broker is the call id, the sealed bytes and routing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from strongroom.domain import errors
from strongroom.domain.errors import DomainError, ServiceUnavailableError
from strongroom.domain.model import RequestContext
from strongroom.domain.ports import UnitOfWorkFactory
from strongroom.engines.base import AccountInfo, DatabaseSpec, UserChanges, UserSpec
from strongroom.services.accounts import AccountService
from strongroom.services.secrets_box import SecretBox
from strongroom.services.visibility import visible_instance

log = logging.getLogger(__name__)

# The calls a worker runs for an API process, and nothing else.
METHODS = frozenset(
    {
        "list_users",
        "get_user",
        "create_users",
        "update_user",
        "delete_user",
        "change_passwords",
        "user_databases",
        "grant",
        "revoke",
        "list_databases",
        "create_databases",
        "delete_database",
        "show_database",
        "enable_root",
        "root_enabled",
        "disable_root",
    }
)
_TYPES: dict[str, type[Any]] = {
    c.__name__: c for c in (AccountInfo, DatabaseSpec, UserChanges, UserSpec)
}


class AccountTransport(Protocol):
    def request(self, route: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``message`` to the worker of ``route`` and return its answer; TimeoutError
        when none comes within ``timeout`` seconds."""
        ...


def encode(value: Any) -> Any:
    """JSON of the call's arguments and results: the account dataclasses by type name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$type": type(value).__name__, **fields}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict) and "$type" in value:
        cls = _TYPES[value["$type"]]  # only the account types: a KeyError is a bad message
        fields = {k: decode(v) for k, v in value.items() if k != "$type"}
        # The dataclasses are frozen and hold tuples.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    return value


def _error(value: dict[str, Any]) -> Exception:
    """The worker's domain error as the same class here, so the fault is the same."""
    cls = getattr(errors, str(value.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, DomainError)):
        return RuntimeError("the instance's host failed to run the call (see its log)")
    exc: DomainError = cls.__new__(cls)
    Exception.__init__(exc, str(value.get("message", "")))
    return exc


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class RelayedAccounts:
    """:class:`AccountService`'s calls, run by the worker of the instance's host."""

    _uow: UnitOfWorkFactory
    _box: SecretBox
    _transport: AccountTransport
    _timeout: float

    def __getattr__(self, method: str) -> Callable[..., Any]:
        """Each of :data:`METHODS`, with the signature it has on :class:`AccountService`."""
        if method not in METHODS:
            raise AttributeError(method)

        def call(ctx: RequestContext, *, instance_id: str, **kwargs: Any) -> Any:
            return self._relay(method, ctx, instance_id, kwargs)

        return call

    def _relay(
        self, method: str, ctx: RequestContext, instance_id: str, kwargs: dict[str, Any]
    ) -> Any:
        with self._uow() as uow:
            instance = visible_instance(uow, ctx, instance_id)
        call_id = uuid.uuid4().hex
        request = {
            "method": method,
            "context": dataclasses.asdict(ctx),
            "instance_id": instance_id,
            "kwargs": encode(kwargs),
            "deadline": time.time() + self._timeout,
        }
        message = {"id": call_id, "sealed": self._box.seal(request, bound_to="call:" + call_id)}
        try:
            answer = self._transport.request(instance.host, message, self._timeout)
        except (TimeoutError, OSError) as exc:
            log.warning("account call %s to host %s: %s", call_id, instance.host, exc)
            raise ServiceUnavailableError(
                f"The host of instance {instance_id} did not answer in time; try again later."
            ) from exc
        opened = self._box.open(str(answer.get("sealed")), bound_to="answer:" + call_id)
        if "error" in opened:
            raise _error(opened["error"])
        return decode(opened.get("result"))


class AccountCallServer:
    """The worker's side: open a relayed call, run it on this host, seal the answer."""

    def __init__(self, accounts: AccountService, box: SecretBox) -> None:
        self._accounts = accounts
        self._box = box

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The sealed answer, or None for a message that is not a valid, current call
        (nobody waits for it, or it was not sealed with this service's key)."""
        call_id = str(message.get("id", ""))
        try:
            request = self._box.open(str(message.get("sealed", "")), bound_to="call:" + call_id)
        except (DomainError, ValueError) as exc:
            log.warning("account call %s refused: %s", call_id, exc)
            return None
        if request["method"] not in METHODS or time.time() > float(request["deadline"]):
            log.warning("account call %s refused: unknown or past its deadline", call_id)
            return None
        return {
            "id": call_id,
            "sealed": self._box.seal(self._run(request), bound_to="answer:" + call_id),
        }

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        context = request["context"]
        ctx = RequestContext(
            project_id=context["project_id"],
            user_id=context["user_id"],
            roles=tuple(context["roles"]),
            # As the API process that sealed the call decided it, under its policy.
            is_admin=context.get("is_admin") is True,
        )
        method = getattr(self._accounts, request["method"])
        try:
            result = method(ctx, instance_id=request["instance_id"], **decode(request["kwargs"]))
        except DomainError as exc:
            return {"error": {"class": type(exc).__name__, "message": str(exc)}}
        except Exception:
            log.exception(
                "account call %s on instance %s failed", request["method"], request["instance_id"]
            )
            return {"error": {"class": "unexpected"}}
        return {"result": encode(result)}
