"""Path tricks in ids, names, container names, strategy containers and SQLite paths.

Every trick is refused with a 4xx fault or, where the value is only data (a name), stored
verbatim; none gives a 500, and no file appears outside the data dir's object store and
instance directories (the filesystem is compared before and after each request).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from fixtures.service import Harness, make_harness
from security.wire import assert_fault, external_sqlite

MARK = "escape-7f3a"
LONG = "a" * 10_000

# Raw URL path segments: sent as written (the client does not re-encode percent signs).
# (A bare ".." segment is not here: clients resolve it before sending, RFC 3986 §5.2.4.)
ID_TRICKS = [
    "%2e%2e",
    "%2E%2E%2F%2E%2E",
    f"..%2f..%2f{MARK}",
    f"%2fetc%2f{MARK}",
    f"a%00{MARK}",
    LONG,
    quote("é/../ü", safe=""),
    quote("\u202e\ufeff", safe=""),
]
ID_PATHS = [
    "GET /backups/{x}",
    "DELETE /backups/{x}",
    "GET /instances/{x}",
    "DELETE /instances/{x}",
    "GET /instances/{x}/backups",
    "GET /datastores/{x}",
    "GET /datastores/{x}/versions",
    "GET /datastores/sqlite/versions/{x}",
    "GET /datastores/versions/{x}",
    "GET /flavors/{x}",
]
CONTAINER_TRICKS = [
    "..",
    ".",
    f"../{MARK}",
    f"../../{MARK}",
    f"a/../../{MARK}",
    f"/tmp/{MARK}",
    f"{MARK}/sub",
    f"{MARK}\u0000x",
    f"{MARK}\\..\\x",
    "a" * 256,
    LONG,
    f"café-{MARK}",
    f"{MARK} x",
]

# Refused by Trove's schema at strategy creation already: "..", ".", and over 255 characters.
PATH_CONTAINERS = CONTAINER_TRICKS[2:9]


@dataclass
class World:
    h: Harness
    root: Path
    instance_id: str

    @property
    def objects(self) -> Path:
        return self.h.settings.data_dir / "objects"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("paths")
    h = make_harness(root)
    try:
        instance = h.a.create_instance("paths")
        h.a.wait_instance(instance["id"])
        yield World(h, root, instance["id"])
    finally:
        h.container.close()


def files_outside_store(world: World) -> set[str]:
    """Every file under the test root that is not in the object store, an instance dir, the
    operator's SQLite directory or the metadata database; and anything carrying the marker
    near the root."""
    data = world.h.settings.data_dir
    allowed = (data / "objects", data / "instances", world.root / "external")
    found = set()
    for dirpath, _dirs, names in os.walk(world.root):
        for name in names:
            path = Path(dirpath) / name
            if not any(path.is_relative_to(a) for a in allowed) and not name.startswith(
                "strongroom.db"
            ):
                found.add(str(path))
    for ancestor in list(world.root.parents)[:4]:
        found.update(str(p) for p in ancestor.glob(f"*{MARK}*"))
    return found


@pytest.fixture
def unchanged_outside_store(world: World) -> Iterator[None]:
    world.h.wait_idle()
    before = files_outside_store(world)
    yield
    world.h.wait_idle()
    assert files_outside_store(world) == before
    for path in world.objects.rglob("*"):
        assert path.resolve().is_relative_to(world.objects.resolve()), path


def _store_containers(world: World) -> set[str]:
    return {p.name for p in world.objects.iterdir()} if world.objects.exists() else set()


@pytest.mark.usefixtures("unchanged_outside_store")
@pytest.mark.parametrize("trick", ID_TRICKS, ids=range(len(ID_TRICKS)))
@pytest.mark.parametrize("route", ID_PATHS)
def test_tricky_ids_in_paths_are_not_found(world: World, route: str, trick: str) -> None:
    method, path = route.split(" ")
    url = world.h.a.url(path.replace("{x}", trick))
    r = world.h.client.request(method, url, headers={"X-Auth-Token": world.h.a.token})
    assert_fault(r, (400, 404))


@pytest.mark.usefixtures("unchanged_outside_store")
@pytest.mark.parametrize("container", CONTAINER_TRICKS, ids=range(len(CONTAINER_TRICKS)))
def test_tricky_swift_container_is_refused(world: World, container: str) -> None:
    before = _store_containers(world)
    body = {"backup": {"name": "b", "instance": world.instance_id, "swift_container": container}}
    assert_fault(world.h.a.post("/backups", body), 400)
    assert _store_containers(world) == before


@pytest.mark.usefixtures("unchanged_outside_store")
def test_percent_signs_in_containers_are_literal(world: World) -> None:
    """`%2e%2e` is a legal container name (contract charset) and is never decoded."""
    body = {"backup": {"name": "b", "instance": world.instance_id, "swift_container": "%2e%2e"}}
    r = world.h.a.post("/backups", body)
    assert r.status_code == 202, r.text
    world.h.a.wait_backup(r.json()["backup"]["id"])
    assert (world.objects / "%2e%2e").is_dir()


@pytest.mark.usefixtures("unchanged_outside_store")
@pytest.mark.parametrize("container", CONTAINER_TRICKS, ids=range(len(CONTAINER_TRICKS)))
def test_tricky_strategy_container_never_leaves_the_store(world: World, container: str) -> None:
    """Whatever the strategy accepts, a backup that resolves to it writes inside the store."""
    spec = {"backup_strategy": {"instance_id": world.instance_id, "swift_container": container}}
    r = world.h.a.post("/backup_strategies", spec)
    assert r.status_code in (202, 400), r.text
    if r.status_code == 202:
        created = world.h.a.post(
            "/backups", {"backup": {"name": "s", "instance": world.instance_id}}
        )
        assert created.status_code in (202, 400), created.text
        world.h.wait_idle()
    world.h.a.delete(f"/backup_strategies?instance_id={world.instance_id}")


@pytest.mark.parametrize("container", PATH_CONTAINERS, ids=range(len(PATH_CONTAINERS)))
def test_path_like_strategy_container_is_refused(world: World, container: str) -> None:
    spec = {"backup_strategy": {"swift_container": container}}
    try:
        assert_fault(world.h.a.post("/backup_strategies", spec), 400)
    finally:
        world.h.a.delete("/backup_strategies")


@pytest.mark.usefixtures("unchanged_outside_store")
@pytest.mark.parametrize(
    "name", [f"../../{MARK}", f"/etc/{MARK}", f"%2e%2e/{MARK}", f"é\u200b{MARK}", "…/\u202e1"]
)
def test_names_are_data_never_paths(world: World, name: str) -> None:
    r = world.h.a.post("/backups", {"backup": {"name": name, "instance": world.instance_id}})
    assert r.status_code == 202, r.text
    backup = world.h.a.wait_backup(r.json()["backup"]["id"])
    assert backup["name"] == name
    assert backup["locationRef"].endswith(f"/{backup['id']}/manifest.json")


def test_overlong_names_are_refused(world: World) -> None:
    r = world.h.a.post("/backups", {"backup": {"name": LONG, "instance": world.instance_id}})
    assert_fault(r, 400)
    r = world.h.a.post("/instances", {"instance": {"name": LONG, "flavorRef": "1"}})
    assert_fault(r, 400)


def _external(world: World, path: Any) -> Any:
    body = {
        "instance": {"name": "ext", "datastore": {"type": "sqlite"}, "external": {"path": path}}
    }
    return world.h.a.post("/instances", body)


@pytest.mark.usefixtures("unchanged_outside_store")
def test_sqlite_external_path_tricks_are_refused(world: World, tmp_path: Path) -> None:
    allowed = world.root / "external"
    secret = external_sqlite(tmp_path, f"{MARK}.db")
    (allowed / "link.db").unlink(missing_ok=True)
    (allowed / "link.db").symlink_to(secret)
    cases: list[tuple[Any, int]] = [
        (str(secret), 403),
        (f"{allowed}/../{secret.relative_to(world.root.parent)}", 403),
        (str(allowed / "link.db"), 403),
        ("/etc/passwd", 403),
        (f"{allowed}/%2e%2e/{MARK}", 400),
        ("ext.db", 400),
        (f"{allowed}/a\u0000b", 400),
        ("/" + LONG, 403),
        (str(allowed / "ünïcødé.db"), 400),
        (str(allowed), 400),
        (["/etc/passwd"], 400),
        (None, 400),
    ]
    for path, status in cases:
        assert_fault(_external(world, path), status)
    good = _external(world, str(external_sqlite(allowed)))
    assert good.status_code == 200, good.text
