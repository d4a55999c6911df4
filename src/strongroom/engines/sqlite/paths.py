"""Which SQLite files a tenant may register: only files inside the allowed roots that serve
the tenant's project.

A path is judged by where it really leads: symbolic links and ``..`` are resolved before
the containment check. The containment check runs before the existence check, so a tenant
cannot probe which files exist outside the roots.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from strongroom.engines.errors import ExternalNotAllowedError, InvalidExternalError


def resolve_roots(roots: Sequence[Path | str]) -> tuple[Path, ...]:
    return tuple(Path(os.path.realpath(os.fspath(root))) for root in roots)


def external_path(params: Mapping[str, Any], roots: Sequence[Path]) -> Path:
    """The resolved path of an allowed, existing regular file named by ``params["path"]``."""
    raw = params.get("path")
    if not isinstance(raw, str) or not raw:
        raise InvalidExternalError("'path' must be the absolute path of a SQLite file")
    if "\x00" in raw:
        raise InvalidExternalError("'path' must not contain NUL characters")
    if not os.path.isabs(raw):
        raise InvalidExternalError("'path' must be absolute")
    if not roots:
        raise ExternalNotAllowedError(
            "registration of external SQLite files is disabled: the operator allows no directory"
        )
    try:
        # A link swapped while it is resolved makes readlink fail (EINVAL): refused below.
        first = Path(os.path.realpath(raw))
    except OSError as exc:
        raise InvalidExternalError("the path cannot be resolved") from exc
    if not is_inside(first, roots):
        raise ExternalNotAllowedError("the path is outside the directories the operator allows")
    try:
        resolved = Path(raw).resolve(strict=True)
        info = resolved.stat()
    except FileNotFoundError as exc:
        raise InvalidExternalError("no file exists at that path") from exc
    except (OSError, RuntimeError) as exc:
        raise InvalidExternalError("the path cannot be resolved") from exc
    # Resolve again in case a link changed between the two resolutions.
    if not is_inside(resolved, roots):
        raise ExternalNotAllowedError("the path is outside the directories the operator allows")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidExternalError("the path is not a regular file")
    if info.st_size == 0:
        raise InvalidExternalError("the file is empty, not a SQLite database")
    return resolved


def is_inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def containing_root(path: Path, roots: Sequence[Path]) -> Path:
    """The deepest of ``roots`` holding ``path``: the fewest directories to walk beneath."""
    holding = [root for root in roots if is_inside(path, [root])]
    if not holding:
        raise ExternalNotAllowedError("the path is outside the directories the operator allows")
    return max(holding, key=lambda root: len(root.parts))
