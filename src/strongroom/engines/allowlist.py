"""The operator's allow-lists for external instances, each entry optionally per project.

An entry names a host, a directory or a data directory the service may back up, and the
projects it serves (none named: every project). A tenant can register only what an entry
serving its own project allows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AllowEntry:
    value: str
    projects: frozenset[str] = frozenset()

    def serves(self, project_id: str) -> bool:
        return not self.projects or project_id in self.projects


@dataclass(frozen=True)
class AllowList:
    """Entries in the operator's order. Paths are resolved once, when the list is built."""

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def of(cls, items: Iterable[AllowEntry | str | os.PathLike[str]]) -> AllowList:
        entries = [i if isinstance(i, AllowEntry) else AllowEntry(os.fspath(i)) for i in items]
        return cls(tuple(entries))

    @classmethod
    def of_paths(cls, items: Iterable[AllowEntry | str | os.PathLike[str]]) -> AllowList:
        """Directories, resolved (symlinks and ``..``) so that containment is judged on
        where they really lead."""
        entries = cls.of(items).entries
        return cls(tuple(AllowEntry(os.path.realpath(e.value), e.projects) for e in entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def for_project(self, project_id: str) -> tuple[str, ...]:
        return tuple(e.value for e in self.entries if e.serves(project_id))

    def allows_host(self, host: str, project_id: str) -> bool:
        wanted = host.strip().lower()
        return any(v.strip().lower() == wanted for v in self.for_project(project_id))

    def allows_path(self, resolved: Path, project_id: str) -> bool:
        """``resolved`` must already be resolved by the caller."""
        return any(
            resolved == Path(root) or resolved.is_relative_to(root)
            for root in self.for_project(project_id)
        )

    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(e.value) for e in self.entries)
