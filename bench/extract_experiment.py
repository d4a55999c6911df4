"""Restore-side experiment: the engine's tar extraction against a direct ustar reader.

    .venv/bin/python -m bench.extract_experiment STATE_FILE LABEL

Reads one Strongroom PostgreSQL full backup (recorded by ``bench.sr_task`` in STATE_FILE)
through the verified chunk reader twice: once into ``tarstream.extract`` (``tarfile`` in
streaming mode), once into :func:`extract_direct` below, which parses the 512-byte ustar
headers itself and writes each file's bytes straight from the reader's blocks. Prints both
times and checks the two trees are identical.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path, PurePosixPath

from bench.common import WORK
from bench.sr_task import _backup_obj, _load, _transfer
from strongroom.engines.base import ByteSource
from strongroom.engines.postgresql import tarstream

BLOCK = 512
READ_SIZE = 1024 * 1024


class _Blocks:
    """Exact reads over a ByteSource without re-joining what was already read."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._buf = memoryview(b"")

    def take(self, size: int) -> memoryview:
        """Up to ``size`` bytes (at least one unless the stream ended)."""
        if not self._buf:
            self._buf = memoryview(self._source.read(READ_SIZE))
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def exact(self, size: int) -> bytes:
        parts = []
        while size:
            part = self.take(size)
            if not part:
                raise tarstream.TarStreamError("the backup stream ends early")
            parts.append(part)
            size -= len(part)
        return b"".join(parts)


def extract_direct(source: ByteSource, target: Path, owner: tuple[int, int] | None) -> list[str]:
    blocks = _Blocks(source)
    names: list[str] = []
    while True:
        header = blocks.exact(BLOCK)
        if not header.strip(b"\0"):
            break  # end-of-archive marker
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        parts = [p for p in PurePosixPath(info.name).parts if p not in ("", ".")]
        if info.name.startswith("/") or ".." in parts or not parts:
            raise tarstream.TarStreamError(f"unsafe path in the backup: {info.name!r}")
        dest = target.joinpath(*parts)
        if info.isdir():
            dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif info.isreg():
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                remaining = info.size
                while remaining:
                    view = blocks.take(remaining)
                    if not view:
                        raise tarstream.TarStreamError("the backup stream ends inside a file")
                    remaining -= len(view)
                    while view:
                        view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            blocks.exact(-info.size % BLOCK)
        else:
            raise tarstream.TarStreamError(f"unsupported entry in the backup: {info.name!r}")
        if owner is not None:
            os.chown(dest, *owner)
        names.append("/".join(parts))
    while block := source.read(READ_SIZE):
        if block.strip(b"\0"):
            raise tarstream.TarStreamError("unexpected data after the end of the tar archive")
    return names


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    state_file, label = Path(argv[0]), argv[1]
    transfer = _transfer(WORK / "strongroom")
    state = _load(state_file)
    results = {}
    for name, fn in (("tarstream.extract", tarstream.extract), ("direct ustar", extract_direct)):
        links = transfer.open_chain(_backup_obj(state[label]), lambda _bid: None)
        (source,) = (i.stream for i in transfer.restore_inputs(links[:1]))
        target = WORK / f"extract-{name.split('.')[0].split()[0]}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        started = time.perf_counter()
        fn(source, target, None)
        results[name] = (time.perf_counter() - started, _digest(target))
        print(f"{name:<18} {results[name][0]:.2f} s")
    digests = {d for _t, d in results.values()}
    print("identical trees" if len(digests) == 1 else "TREES DIFFER")
    for name in results:
        shutil.rmtree(WORK / f"extract-{name.split('.')[0].split()[0]}", ignore_errors=True)
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
