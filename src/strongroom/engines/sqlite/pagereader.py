"""Raw page reader for a SQLite snapshot, run as a separate process (standard library only).

Why a separate process: SQLite's locks are POSIX advisory locks, which belong to the
*process*, and closing *any* descriptor of a file drops every lock the process holds on it
(SQLite's "how to corrupt" §2.2). The engine holds the snapshot's read transaction through
the standard ``sqlite3`` module; if it also opened and closed the database, ``-wal`` or
``-shm`` files itself, it could silently release that read lock (or a lock held by any other
connection in the service process). This script opens those files in a process that holds no
SQLite locks, so its descriptors cannot disturb anyone. It never takes a lock and never writes.

Protocol (stdin / stdout, one JSON line each way, then raw pages):

The files are never opened by path: the parent passes a descriptor of the database's
directory (reached without following any link), and the files are opened relative to it
with ``O_NOFOLLOW``; the database must be a regular file with the registered
``(st_dev, st_ino)``, its ``-wal`` and ``-shm`` regular files. Nothing read here can come
from a file a swapped link leads to.

1. The parent writes ``{"dir_fd": n, "name": str, "dev": n, "ino": n, "wal": bool,
   "page_size": n, "page_count": n}`` (``dev``/``ino`` may be null: not checked).
2. The child reads the main file's header and, for a WAL database, the wal-index header
   from ``-shm`` (the parent holds the WAL write lock at this moment, so the header is
   exactly its reader's snapshot). It answers ``{"db_bytes", "db_page_size",
   "db_header_pages"}`` (what the main file says of itself, for the parent to compare with
   what its SQLite connection saw) plus ``{"mx_frame", "n_page", "page_size",
   "n_backfill"}`` in WAL mode.
3. The parent releases the write lock and writes ``go``.
4. The child writes pages 1..page_count (``page_size`` bytes each) and one JSON line of
   statistics, then exits 0. Failures go to stderr with exit status 2.

The page count is the file's own claim (its header, or its size, or the WAL's commit), and
the file is the tenant's: a sparse file, or a WAL naming pages beyond the main file's end,
can claim up to 2^32 pages while storing almost nothing. Before streaming, the child counts
the bytes of the image that neither the main file stores (holes, or past its end) nor the
WAL holds; SQLite never leaves such gaps (only a copy tool or a filesystem eliding zeros
makes holes), so when most of the image is gaps the child refuses rather than stream zeros
for hours: the work of a backup stays bounded by what the tenant really stores.

How a page is found (WAL mode): its newest frame with index <= ``mx_frame`` in the current
WAL generation, else the main file. See ``strongroom.engines.sqlite.snapshot`` for why this
is exactly the reader's snapshot while writers and checkpoints keep running.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

WAL_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
WAL_MAGICS = (0x377F0682, 0x377F0683)
WAL_INDEX_VERSION = 3007000
WAL_INDEX_HEADER_SIZE = 48
SHM_PREFIX_SIZE = 136  # two wal-index headers + checkpoint info
READ_CHUNK = 1 << 20
DB_HEADER_SIZE = 100
# Gaps tolerated in any image (zero pages a copy made holes), and beyond that at most this
# share of it (a database mostly of zeroed free pages: VACUUM rewrites it without them).
GAP_SLACK = 64 << 20
GAP_SHARE = (3, 4)

# pread(size, offset) -> bytes (short at end of file)
Pread = Callable[[int, int], bytes]


class PageReadError(Exception):
    """The files do not look like the snapshot the parent described."""


@dataclass(frozen=True)
class WalIndexHeader:
    mx_frame: int
    n_page: int
    page_size: int
    salt: bytes
    n_backfill: int


@dataclass
class ReadStats:
    wal_frames: int = 0
    wal_pages: int = 0
    wal_restarted: bool = False
    reread_from_db: int = 0


def wal_checksum(data: bytes, *, native: bool = True) -> tuple[int, int]:
    """SQLite's WAL checksum over ``data`` (a multiple of 8 bytes)."""
    order = "=" if native else ">"
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    s1 = s2 = 0
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def parse_wal_index_header(shm: bytes) -> WalIndexHeader:
    """Parse the first 136 bytes of a ``-shm`` file (native byte order, as SQLite writes)."""
    if len(shm) < SHM_PREFIX_SIZE:
        raise PageReadError("the wal-index (-shm) file is too short")
    first = shm[:WAL_INDEX_HEADER_SIZE]
    if first != shm[WAL_INDEX_HEADER_SIZE : 2 * WAL_INDEX_HEADER_SIZE]:
        raise PageReadError("the wal-index header copies differ (it is being written)")
    version, _unused, _change, is_init, _big_end, size_code, mx_frame, n_page = struct.unpack_from(
        "=IIIBBHII", first, 0
    )
    if version != WAL_INDEX_VERSION or not is_init:
        raise PageReadError("the wal-index header is not initialised or of an unknown version")
    if wal_checksum(first[:40]) != struct.unpack_from("=II", first, 40):
        raise PageReadError("the wal-index header checksum is wrong")
    page_size = (size_code & 0xFF00) | ((size_code & 0x0001) << 16)
    (n_backfill,) = struct.unpack_from("=I", shm, 96)
    return WalIndexHeader(mx_frame, n_page, page_size, bytes(first[32:40]), n_backfill)


def build_frame_map(wal: Pread, hdr: WalIndexHeader) -> dict[int, int] | None:
    """Page number -> index (1-based) of its newest WAL frame <= ``hdr.mx_frame``.

    ``None`` means the WAL was restarted after the snapshot (its salt changed). SQLite only
    restarts a WAL once every frame has been copied into the main file and no reader uses a
    WAL frame, so the snapshot is then entirely in the main file, which no checkpoint may
    touch while the snapshot's reader holds read-mark 0. That is only possible if the
    header said every frame was backfilled; anything else is an error.
    """
    if hdr.mx_frame == 0:
        return {}
    head = wal(WAL_HEADER_SIZE, 0)
    if len(head) < WAL_HEADER_SIZE or head[16:24] != hdr.salt:
        _check_restart_allowed(hdr)
        return None
    magic, _version, page_size = struct.unpack_from(">III", head, 0)
    if magic not in WAL_MAGICS or page_size != hdr.page_size:
        raise PageReadError("the -wal file header does not match the wal-index")
    frames: dict[int, int] = {}
    frame_size = FRAME_HEADER_SIZE + page_size
    commit_size = 0
    for index in range(1, hdr.mx_frame + 1):
        frame = wal(FRAME_HEADER_SIZE, WAL_HEADER_SIZE + (index - 1) * frame_size)
        if len(frame) < FRAME_HEADER_SIZE or frame[8:16] != hdr.salt:
            _check_restart_allowed(hdr)
            return None
        pgno, commit_size = struct.unpack_from(">II", frame, 0)
        frames[pgno] = index
    if commit_size != hdr.n_page:
        raise PageReadError("the last snapshot frame is not the commit the wal-index names")
    return frames


def _check_restart_allowed(hdr: WalIndexHeader) -> None:
    if hdr.n_backfill < hdr.mx_frame:
        raise PageReadError("the -wal file changed under a reader that still needs it")


def read_wal_page(wal: Pread, hdr: WalIndexHeader, index: int, pgno: int) -> bytes | None:
    """The page stored in frame ``index``, or ``None`` if that frame was overwritten.

    SQLite writes a frame's header before its data, so a header that is unchanged after
    the data was read proves the data was not being overwritten either.
    """
    offset = WAL_HEADER_SIZE + (index - 1) * (FRAME_HEADER_SIZE + hdr.page_size)
    blob = wal(FRAME_HEADER_SIZE + hdr.page_size, offset)
    if len(blob) < FRAME_HEADER_SIZE + hdr.page_size or not _frame_is(blob, hdr, pgno):
        return None
    if wal(FRAME_HEADER_SIZE, offset) != blob[:FRAME_HEADER_SIZE]:
        return None
    return blob[FRAME_HEADER_SIZE:]


def _frame_is(frame: bytes, hdr: WalIndexHeader, pgno: int) -> bool:
    return frame[8:16] == hdr.salt and struct.unpack_from(">I", frame, 0)[0] == pgno


def stream_pages(
    db: Pread,
    wal: Pread | None,
    hdr: WalIndexHeader | None,
    frames: dict[int, int],
    *,
    page_size: int,
    page_count: int,
    write: Callable[[bytes], None],
) -> ReadStats:
    """Write pages 1..page_count of the snapshot, in order, through ``write``."""
    stats = ReadStats()
    pgno = 1
    max_run = max(1, READ_CHUNK // page_size)
    while pgno <= page_count:
        index = frames.get(pgno)
        if index is not None and wal is not None and hdr is not None:
            page = read_wal_page(wal, hdr, index, pgno)
            if page is None:
                if hdr.n_backfill < hdr.mx_frame:
                    raise PageReadError("a WAL frame of the snapshot was overwritten")
                stats.reread_from_db += 1
                page = _read_db(db, pgno, 1, page_size)
            else:
                stats.wal_pages += 1
            write(page)
            pgno += 1
            continue
        end = pgno + 1
        while end <= page_count and end - pgno < max_run and end not in frames:
            end += 1
        write(_read_db(db, pgno, end - pgno, page_size))
        pgno = end
    return stats


def _read_db(db: Pread, pgno: int, count: int, page_size: int) -> bytes:
    size = count * page_size
    data = db(size, (pgno - 1) * page_size)
    # SQLite reads past the end of the main file as zeros (the pages then live in the WAL).
    return data if len(data) == size else data + bytes(size - len(data))


def absent_bytes(fd: int, end: int) -> int:
    """Bytes of ``[0, end)`` the file does not store: its holes and what lies past its end."""
    stored = min(os.fstat(fd).st_size, end)
    absent = end - stored
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return absent
    offset = 0
    while offset < stored:
        try:
            data = min(os.lseek(fd, offset, seek_data), stored)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # holes only, up to the end
                data = stored
            elif exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                return absent  # the filesystem cannot tell holes: count none
            else:
                raise
        absent += data - offset
        if data >= stored:
            break
        offset = os.lseek(fd, data, seek_hole)
    return absent


def check_stored(fd: int, frames: dict[int, int], *, page_size: int, page_count: int) -> None:
    """Refuse an image made mostly of pages that neither the main file nor the WAL stores."""
    image = page_size * page_count
    in_wal = page_size * sum(1 for pgno in frames if pgno <= page_count)
    gaps = absent_bytes(fd, image) - in_wal
    share, of = GAP_SHARE
    if gaps > GAP_SLACK and gaps * of > image * share:
        raise PageReadError(
            f"the database claims {page_count} pages ({image} bytes) but {gaps} bytes of them "
            "are not stored (holes in a sparse file, or beyond its end): SQLite never leaves "
            "such gaps; VACUUM rewrites a database without them"
        )


def _pread(fd: int) -> Pread:
    def read(size: int, offset: int) -> bytes:
        parts: list[bytes] = []
        while size > 0:
            part = os.pread(fd, size, offset)
            if not part:
                break
            parts.append(part)
            size -= len(part)
            offset += len(part)
        return b"".join(parts)

    return read


def open_beside(dir_fd: int, name: str, identity: tuple[int, int] | None = None) -> int:
    """``name`` in the directory ``dir_fd``: a regular file (and ``identity``), no link."""
    if not name or "/" in name or name in (".", ".."):
        raise PageReadError(f"not a file name: {name!r}")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PageReadError(f"{name} is a symbolic link") from exc
        if exc.errno == errno.ENOENT:
            raise PageReadError(f"{name} is missing") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PageReadError(f"{name} is not a regular file")
    if identity is not None and (st.st_dev, st.st_ino) != identity:
        os.close(fd)
        raise PageReadError("the registered file was replaced by another file")
    return fd


def _identity(request: dict[str, object]) -> tuple[int, int] | None:
    dev, ino = request.get("dev"), request.get("ino")
    return (dev, ino) if isinstance(dev, int) and isinstance(ino, int) else None


def main_file_facts(fd: int) -> dict[str, int]:
    """What the main file says of itself: its size, page size, and the page count in its
    header (0 when that count is stale, and SQLite then counts the file's pages)."""
    size = os.fstat(fd).st_size
    header = _pread(fd)(DB_HEADER_SIZE, 0)
    if len(header) < DB_HEADER_SIZE:
        return {"db_bytes": size, "db_page_size": 0, "db_header_pages": 0}
    (raw_page_size,) = struct.unpack_from(">H", header, 16)
    change_counter, pages = struct.unpack_from(">II", header, 24)
    (valid_for,) = struct.unpack_from(">I", header, 92)
    return {
        "db_bytes": size,
        "db_page_size": 65536 if raw_page_size == 1 else raw_page_size,
        "db_header_pages": pages if change_counter == valid_for else 0,
    }


def main() -> int:
    stdin = sys.stdin.buffer
    out = open(sys.stdout.fileno(), "wb", buffering=READ_CHUNK, closefd=False)  # noqa: SIM115

    def write(data: bytes) -> None:
        out.write(data)

    try:
        request = json.loads(stdin.readline())
        page_size = int(request["page_size"])
        page_count = int(request["page_count"])
        dir_fd, name = int(request["dir_fd"]), str(request["name"])
        db_fd = open_beside(dir_fd, name, _identity(request))
        db = _pread(db_fd)
        wal: Pread | None = None
        hdr: WalIndexHeader | None = None
        reply: dict[str, int] = main_file_facts(db_fd)
        if request["wal"]:
            shm_fd = open_beside(dir_fd, name + "-shm")
            hdr = parse_wal_index_header(_pread(shm_fd)(SHM_PREFIX_SIZE, 0))
            os.close(shm_fd)
            if hdr.mx_frame:
                wal = _pread(open_beside(dir_fd, name + "-wal"))
            reply |= {
                "mx_frame": hdr.mx_frame,
                "n_page": hdr.n_page,
                "page_size": hdr.page_size,
                "n_backfill": hdr.n_backfill,
            }
        write(json.dumps(reply).encode() + b"\n")
        out.flush()
        if stdin.readline().strip() != b"go":
            return 0
        frames: dict[int, int] | None = {}
        if wal is not None and hdr is not None:
            frames = build_frame_map(wal, hdr)
        check_stored(db_fd, frames or {}, page_size=page_size, page_count=page_count)
        stats = stream_pages(
            db,
            wal if frames else None,
            hdr,
            frames or {},
            page_size=page_size,
            page_count=page_count,
            write=write,
        )
        stats.wal_frames = hdr.mx_frame if hdr is not None else 0
        stats.wal_restarted = frames is None
        write(json.dumps(stats.__dict__).encode() + b"\n")
        out.flush()
    except BrokenPipeError:
        return 3
    except (OSError, PageReadError, ValueError, KeyError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        filename = getattr(exc, "filename", None)
        sys.stderr.write(f"{message}{f': {filename}' if filename else ''}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
