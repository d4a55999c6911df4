"""The relay of user, database and root calls (scaled out), without a broker: a loopback
transport hands the sealed message to the worker's side. What a worker acts on is only a
current call sealed with this service's key, for one of the account methods; errors come
back as the same domain errors; another project's instance is refused before anything is
sent."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Harness, make_harness
from strongroom.domain.errors import (
    NotImplementedByDatastoreError,
    ResourceNotFoundError,
    ServiceUnavailableError,
)
from strongroom.domain.model import RequestContext
from strongroom.services.account_relay import AccountCallServer, RelayedAccounts
from strongroom.services.accounts import AccountService
from strongroom.services.secrets_box import SecretBox

KEY = os.urandom(32)


class Loopback:
    """Hands each message to the server as the broker would, and keeps what it carried."""

    def __init__(self, server: AccountCallServer | None) -> None:
        self.server = server
        self.sent: list[dict[str, Any]] = []

    def request(self, route: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.sent.append(message)
        answer = self.server.handle(message) if self.server else None
        if answer is None:
            raise TimeoutError("no answer")
        return answer


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(tmp_path)
    try:
        yield harness
    finally:
        harness.container.close()


def relay(h: Harness, server: AccountCallServer | None) -> tuple[RelayedAccounts, Loopback]:
    loop = Loopback(server)
    relayed = RelayedAccounts(uow=h.container.uow, box=SecretBox(KEY), transport=loop, timeout=2.0)
    return relayed, loop


def server_of(h: Harness, key: bytes = KEY) -> AccountCallServer:
    accounts = h.container.services.accounts
    assert isinstance(accounts, AccountService)
    return AccountCallServer(accounts, SecretBox(key))


def ctx(project: str) -> RequestContext:
    return RequestContext(project_id=project, user_id="u", roles=("member",))


def test_a_relayed_call_answers_with_the_same_fault(h: Harness) -> None:
    inst = h.a.create_instance("lite")
    h.a.wait_instance(inst["id"])
    relayed, loop = relay(h, server_of(h))
    with pytest.raises(NotImplementedByDatastoreError, match="'sqlite' datastore"):
        relayed.list_users(ctx(h.a.project), instance_id=inst["id"])
    (message,) = loop.sent
    assert set(message) == {"id", "sealed"} and "list_users" not in message["sealed"]


def test_another_projects_instance_is_404_and_nothing_is_sent(h: Harness) -> None:
    inst = h.a.create_instance("lite")
    relayed, loop = relay(h, server_of(h))
    with pytest.raises(ResourceNotFoundError):
        relayed.create_users(ctx(h.b.project), instance_id=inst["id"], users=[])
    assert loop.sent == []


def test_an_admin_stays_an_admin_on_the_worker(h: Harness) -> None:
    """The worker acts as the API process authenticated the caller, admin standing too."""
    inst = h.a.wait_instance(h.a.create_instance("lite")["id"])
    relayed, _ = relay(h, server_of(h))
    admin = RequestContext(project_id="ops", user_id="u", roles=("admin",), is_admin=True)
    with pytest.raises(NotImplementedByDatastoreError, match="'sqlite' datastore"):
        relayed.list_users(admin, instance_id=inst["id"])


def test_no_answer_is_503(h: Harness) -> None:
    inst = h.a.create_instance("lite")
    relayed, _ = relay(h, None)
    with pytest.raises(ServiceUnavailableError, match="did not answer in time"):
        relayed.root_enabled(ctx(h.a.project), instance_id=inst["id"])


def test_the_worker_refuses_what_is_not_a_current_call_of_this_service(h: Harness) -> None:
    inst = h.a.create_instance("lite")
    box, server = SecretBox(KEY), server_of(h)

    def message(call_id: str, **changes: Any) -> dict[str, Any]:
        request = {
            "method": "list_users",
            "context": {"project_id": h.a.project, "user_id": "u", "roles": ["member"]},
            "instance_id": inst["id"],
            "kwargs": {},
            "deadline": time.time() + 5,
            **changes,
        }
        return {"id": call_id, "sealed": box.seal(request, bound_to="call:" + call_id)}

    assert server.handle(message("c1")) is not None  # a valid call is answered
    assert server_of(h, os.urandom(32)).handle(message("c2")) is None  # another key
    moved = message("c3")
    assert server.handle({**moved, "id": "c4"}) is None  # sealed for another call
    assert server.handle(message("c5", deadline=time.time() - 1)) is None  # too late
    assert server.handle(message("c6", method="_record")) is None  # not an account call
    assert server.handle({"id": "c7", "sealed": "v1:garbage"}) is None
