"""`strongroom key rotate`: a new master key, and every manifest re-wrapped under it.

Only manifests change: each backup's data key is unwrapped with the old master key,
wrapped with the new one, and the manifest signed again with the same data key; chunks
are not touched. A child records its parent manifest's SHA-256, so parents are rewritten
first and each child records its parent's new digest; ``restore_from`` registrations'
pinned digests and the values sealed with a key derived from the master key (instance
connections, queued create-instance payloads) follow. Each archived log batch of
point-in-time restore (``<container>/<instance>/wal/<batch>/manifest.json``) is rewritten
the same way, as a manifest without a parent; the pitr tables hold nothing sealed or
pinned, so only the instance connection the archiver uses changes on that side.

Crash safety. The new key waits in ``master.key.new`` and the old one stays in
``master.key`` until the end. Before a manifest is replaced, a line ``{store, key, old,
new}`` (the SHA-256 of the old and the new bytes) is appended to the journal
``master.key.rotation`` and synced; the replacement itself is one atomic put. So at any
moment each manifest is whole under one of the two keys, and a run started again after a
crash reads the journal and carries on: a child whose recorded parent digest leads,
through journaled rewrites, to what the parent now holds is signed again with that
digest (even when already under the new key). Only when every manifest is done is
``master.key.new`` renamed over ``master.key`` and the journal removed. The service does
not start while the journal exists."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from strongroom.domain.errors import DomainError
from strongroom.persistence.recovery import (
    repin_manifests,
    replace_sealed,
    sealed_values,
)
from strongroom.pipeline.checksum import sha256_hex
from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey, rotation_journal, rotation_key
from strongroom.pipeline.manifest import EncryptionParams, Manifest
from strongroom.pipeline.reader import open_manifest
from strongroom.services import object_layout
from strongroom.services.secrets_box import SecretBox
from strongroom.storage.base import StorageBackend
from strongroom.storage.errors import ObjectNotFoundError, StorageError

CONNECTIONS_INFO = b"strongroom-connections"  # as bootstrap derives the SecretBox key
# Tests only: stop (waiting for a kill) after this many manifests were journaled, before
# the next put, so a test can kill the process at a known point.
PAUSE_ENV = "STRONGROOM_TEST_ROTATE_PAUSE_AFTER"


class RotationError(Exception):
    """The rotation cannot start or continue (the message says why)."""


@dataclass
class RotationReport:
    old_key_id: str
    new_key_id: str
    rewritten: list[str] = field(default_factory=list)  # "store:key"
    already: int = 0  # manifests found under the new key
    problems: dict[str, str] = field(default_factory=dict)  # "store:key" → why not
    resealed: int = 0
    repinned: int = 0
    finished: bool = False


@dataclass(frozen=True)
class StoreToRotate:
    backend: StorageBackend
    containers: Iterable[str]
    known: Iterable[str] = ()  # manifest keys the metadata records in this store


class Journal:
    """The rotation's record: the two key ids, then one line per manifest replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # (store, old manifest SHA-256) → new: a copy in another store has the same old
        # bytes as its original but is sealed anew, so the store is part of the key.
        self.digests: dict[tuple[str, str], str] = {}

    @classmethod
    def open(cls, path: Path, old: MasterKey, new: MasterKey) -> Journal:
        journal = cls(path)
        if not path.exists():
            journal._append({"old_key_id": old.key_id, "new_key_id": new.key_id})
            return journal
        content = path.read_bytes()
        if not content.endswith(b"\n"):
            # A last line cut short by a crash: its put never started. Drop it, so the
            # next line starts on a line of its own.
            content = content[: content.rfind(b"\n") + 1]
            os.truncate(path, len(content))
        try:
            lines = [json.loads(line) for line in content.splitlines()]
        except ValueError:
            raise RotationError(f"{path} is not a rotation journal") from None
        if not lines:  # the header itself was cut short
            journal._append({"old_key_id": old.key_id, "new_key_id": new.key_id})
            return journal
        if lines[0] != {"old_key_id": old.key_id, "new_key_id": new.key_id}:
            raise RotationError(
                f"{path} records another rotation than from {old.key_id} to {new.key_id}"
            )
        for entry in lines[1:]:
            journal.digests[(entry["store"], entry["old"])] = entry["new"]
        return journal

    def leads_to(self, store: str, digest: str, current: str) -> bool:
        """Whether the manifest in ``store`` whose digest was ``digest`` was rewritten,
        once or more by this rotation, into the one whose digest is ``current``."""
        seen = set()
        while (store, digest) in self.digests and digest not in seen:
            seen.add(digest)
            digest = self.digests[(store, digest)]
            if digest == current:
                return True
        return False

    def rewritten(self, store: str, old: str) -> str | None:
        """The new digest of the manifest in ``store`` that had digest ``old``; for a row
        that names no store, the one manifest rewritten from ``old``, if only one was."""
        if store:
            return self.digests.get((store, old))
        news = {new for (_store, was), new in self.digests.items() if was == old}
        return news.pop() if len(news) == 1 else None

    def record(self, store: str, key: str, old: str, new: str) -> None:
        self._append({"store": store, "key": key, "old": old, "new": new})
        self.digests[(store, old)] = new

    def _append(self, entry: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def keys_for(key_file: Path) -> tuple[MasterKey, MasterKey]:
    """The current (old) key and the new one, made now unless a run already made it."""
    old = MasterKey.load(key_file)
    journal = rotation_journal(key_file)
    new_file = rotation_key(key_file)
    if journal.exists() and not new_file.exists():
        header = json.loads(journal.read_text().splitlines()[0])
        if header.get("new_key_id") == old.key_id:
            raise _Finalised()
        raise RotationError(f"{journal} exists but the new key {new_file} is gone")
    new = MasterKey.load_or_create(new_file)
    if new == old:
        raise RotationError("the new key equals the old one")
    return old, new


class _Finalised(Exception):
    """The key was already swapped: only the journal is left to remove."""


def rotate(
    *,
    key_file: Path,
    stores: Mapping[str, StoreToRotate],
    sessions: sessionmaker[Session],
    say: Callable[[str], None] = lambda _line: None,
) -> RotationReport:
    """Rotate (or finish an interrupted rotation) in every container of ``stores``."""
    try:
        old, new = keys_for(key_file)
    except _Finalised:
        rotation_journal(key_file).unlink()
        current = MasterKey.load(key_file)
        return RotationReport(current.key_id, current.key_id, finished=True)
    journal = Journal.open(rotation_journal(key_file), old, new)
    report = RotationReport(old.key_id, new.key_id)
    pause_after = int(os.environ.get(PAUSE_ENV, "0") or 0)
    for name, target in stores.items():
        for container in target.containers:
            known = [k for k in target.known if object_layout.container_of(k) == container]
            _rotate_container(
                name, target.backend, container, known, old, new, journal, report, say, pause_after
            )
    pending = [k for k, why in report.problems.items() if why.startswith(PENDING)]
    if pending:
        raise RotationError(
            f"{len(pending)} manifests are still under the old key (the run can be repeated): "
            + "; ".join(f"{k}: {report.problems[k]}" for k in pending[:5])
        )
    _rekey_metadata(sessions, old, new, journal, report)
    _swap(key_file)
    report.finished = True
    return report


PENDING = "not yet rewritten: "


def _rotate_container(
    name: str,
    store: StorageBackend,
    container: str,
    known: list[str],
    old: MasterKey,
    new: MasterKey,
    journal: Journal,
    report: RotationReport,
    say: Callable[[str], None],
    pause_after: int,
) -> None:
    # First the chain order and each manifest's digest; then each manifest is read again
    # when its turn comes: only one manifest's bytes are held at a time.
    keys: dict[str, str] = {}  # backup id → manifest key
    parent_of: dict[str, str | None] = {}
    digests: dict[str, str] = {}
    # A listing may lag behind writes (Swift updates container listings asynchronously):
    # the manifests the metadata knows are rewritten even when the listing misses them.
    for key in sorted({*store.list(f"{container}/"), *known}):
        sealed_as = _manifest_id(key)
        if sealed_as is None:
            continue
        try:
            raw = store.get(key)
        except ObjectNotFoundError:
            continue  # a row whose manifest is gone: `strongroom check` reports it
        keys[sealed_as] = key
        digests[sealed_as] = sha256_hex(raw)
        try:
            parent_of[sealed_as] = Manifest.from_bytes(raw).parent_id
        except FormatError:
            parent_of[sealed_as] = None  # reported below
    for backup_id in _parents_first(parent_of):
        key = keys[backup_id]
        raw = store.get(key)
        digests[backup_id] = sha256_hex(raw)
        where = f"{name}:{key}"
        try:
            manifest = Manifest.from_bytes(raw)
        except FormatError as exc:
            report.problems[where] = f"not a manifest: {exc}"
            continue
        under = {old.key_id: old, new.key_id: new}.get(manifest.encryption.key_id)
        if under is None:
            report.problems[where] = f"under another master key {manifest.encryption.key_id}"
            continue
        try:
            opened = open_manifest(raw, under, expected_backup_id=backup_id)
        except FormatError as exc:  # tampered: no key opens it any more, nothing to keep
            report.problems[where] = f"does not verify, left as it is: {exc}"
            continue
        parent_digest = manifest.parent_manifest_sha256
        now = digests.get(manifest.parent_id or "")
        if now is not None and now != parent_digest:
            if journal.leads_to(name, parent_digest or "", now):
                parent_digest = now  # the parent was rewritten by this rotation
            else:  # its chain was broken before: it stays as broken, under the new key
                report.problems[where] = "its parent's manifest is not the one it recorded"
        if under is new and parent_digest == manifest.parent_manifest_sha256:
            report.already += 1
            continue
        # Under the old key; or under the new one already, its parent rewritten since
        # (after a store error, a run may rewrite a child whose parent's put failed).
        rewritten = dataclasses.replace(
            manifest,
            parent_manifest_sha256=parent_digest,
            encryption=EncryptionParams(
                manifest.encryption.algorithm,
                new.key_id,
                new.wrap(opened.data_key, backup_id=backup_id),
            ),
            mac="",
        ).signed(opened.data_key)
        blob = rewritten.to_bytes()
        journal.record(name, key, digests[backup_id], sha256_hex(blob))
        if pause_after and len(report.rewritten) >= pause_after:
            say("paused")
            os.kill(os.getpid(), signal.SIGSTOP)  # the test kills the process here
        try:
            store.put(key, blob)
        except StorageError as exc:
            report.problems[where] = PENDING + str(exc)
            continue
        digests[backup_id] = sha256_hex(blob)
        report.rewritten.append(where)
        say(f"rewrote {where}")


def _manifest_id(key: str) -> str | None:
    """The id a manifest key's manifest is sealed with: a backup's id, or an archived log
    batch's (a batch has no parent; it is rewritten like a full backup). ``None`` for
    any other key."""
    backup = object_layout.parse(key)
    if backup is not None:
        return backup.backup_id if backup.kind is object_layout.ObjectKind.MANIFEST else None
    batch = object_layout.parse_archive(key)
    if batch is not None and batch.kind is object_layout.ObjectKind.MANIFEST:
        return batch.batch_id
    return None


def _parents_first(parent_of: dict[str, str | None]) -> list[str]:
    """Backup ids with every parent before its children (by the ``parent_id`` each
    manifest names)."""
    depth: dict[str, int] = {}
    for backup_id in parent_of:
        chain: list[str] = []
        current: str | None = backup_id
        while current is not None and current in parent_of and current not in depth:
            if current in chain:
                break
            chain.append(current)
            current = parent_of[current]
        base = depth.get(current, -1) if current is not None else -1
        for n, bid in enumerate(reversed(chain), start=1):
            depth[bid] = base + n
    return sorted(parent_of, key=lambda bid: (depth[bid], bid))


def _rekey_metadata(
    sessions: sessionmaker[Session],
    old: MasterKey,
    new: MasterKey,
    journal: Journal,
    report: RotationReport,
) -> None:
    """Pinned manifest digests to the rewritten ones; sealed values re-sealed under the
    new key (one transaction: a value already under the new key is left alone)."""
    old_box = SecretBox(old.derive_key(CONNECTIONS_INFO))
    new_box = SecretBox(new.derive_key(CONNECTIONS_INFO))
    with sessions() as session:
        report.repinned = repin_manifests(session, journal.rewritten)
        for sealed in sealed_values(session):
            if _opens(new_box, sealed.value, sealed.bound_to):
                continue
            try:
                value = old_box.open(sealed.value, bound_to=sealed.bound_to)
            except (DomainError, ValueError):
                report.problems[f"{sealed.where}:{sealed.row_id}"] = (
                    "sealed value opens with neither key, left as it is"
                )
                continue
            replace_sealed(session, sealed, new_box.seal(value, bound_to=sealed.bound_to))
            report.resealed += 1
        session.commit()


def _opens(box: SecretBox, value: str, bound_to: str) -> bool:
    try:
        box.open(value, bound_to=bound_to)
    except (DomainError, ValueError):
        return False
    return True


def _swap(key_file: Path) -> None:
    """The new key becomes the key; then the journal goes (in that order: a crash
    between the two leaves only the journal to remove, see :func:`keys_for`)."""
    os.replace(rotation_key(key_file), key_file)
    _fsync_dir(key_file.parent)
    rotation_journal(key_file).unlink()
    _fsync_dir(key_file.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
