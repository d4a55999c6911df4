"""Sub-page deltas: an incremental stores a changed block as its XOR with the parent
chain's image of that block, where that is smaller than the block.

An update of a few rows changes a few dozen bytes of an 8 KiB page (the tuples, the
line pointers, the page LSN and checksum); XORed with the parent's copy the rest is zeros,
which the chunk's zstd stores in almost nothing. The parent's image is what restoring the
parent chain would write: :class:`ParentPages` reads it from the parent chain's own
streams while the backup walks its files, in the same order, so every link is read
forward once and memory stays one request's blocks per link. A restore applies the
deltas in the chain (see ``filestream.ChainRestorer``): XOR commutes, so the newest-first
layout stays, and a block is final once a link that stores it whole is applied.

Streams that carry deltas are file-level stream format 2: a run's block count with
:data:`DELTA_RUN` set holds deltas, without it whole blocks.
"""

from __future__ import annotations

DELTA_RUN = 0x80000000  # in a format 2 run's block count: the blocks are deltas
# A block is stored as a delta when at least this share of the delta's bytes are zero.
# A few updated tuples change a few dozen bytes; a page whose tuples moved (pruned and
# compacted) differs in thousands, and its delta saves a little storage for a read and a
# rewrite of the block at restore: at 0.5, a 5 % update of a table pruned since the
# parent stored 0.72 of the whole pages' bytes and made the restore 1.5 times slower.
MIN_ZERO_SHARE = 0.9


# The parent chain's links are read side by side, each holding about two chunks: past
# this many links an incremental stores whole pages rather than hold more.
MAX_PARENT_LINKS = 8
# Deltas are tried in windows of a file's changed blocks. A window in which fewer than
# half paid (pages whose tuples moved: pruned and compacted) starts a back-off: the file's
# next blocks are stored whole without reading the parent's copy, BACKOFF_FIRST of them,
# doubling with every further window that does not pay up to BACKOFF_MAX; a window that
# pays ends it. A region rewritten since the parent (a range of rows updated again) then
# costs a few windows, and the pages after it still get their deltas.
TRIAL_WINDOW = 256
MIN_PAYING_SHARE = 0.5
BACKOFF_FIRST = 1024
BACKOFF_MAX = 16384


class DeltaTrial:
    """Which of one file's changed blocks to try as deltas (blocks asked for in order)."""

    def __init__(self) -> None:
        self._tried = 0
        self._paid = 0
        self._skip_until = 0  # blocks before this are stored whole without trying
        self._backoff = BACKOFF_FIRST

    def wanted(self, block: int) -> bool:
        """Whether to try deltas on a run of changed blocks starting at ``block``."""
        return block >= self._skip_until

    def record(self, end: int, tried: int, paid: int) -> None:
        """``paid`` of the ``tried`` blocks of a run ending before block ``end`` were
        stored as deltas."""
        self._tried += tried
        self._paid += paid
        if self._tried < TRIAL_WINDOW:
            return
        if self._paid >= self._tried * MIN_PAYING_SHARE:
            self._backoff = BACKOFF_FIRST
        else:
            self._skip_until = end + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._tried = self._paid = 0


def xor_into(target: bytearray | memoryview, data: bytes | memoryview) -> None:
    """``target ^= data`` bytewise (same lengths)."""
    import numpy as np  # 60 ms to import: only backups and restores with deltas pay it

    out = np.frombuffer(target, dtype=np.uint8)
    np.bitwise_xor(out, np.frombuffer(data, dtype=np.uint8), out=out)


def delta_blocks(delta: bytearray | memoryview, block_size: int) -> bytes:
    """Per block of ``delta``, 1 where storing it as a delta pays (enough zero bytes)."""
    import numpy as np

    blocks = np.frombuffer(delta, dtype=np.uint8).reshape(-1, block_size)
    nonzero = np.count_nonzero(blocks, axis=1)
    return (nonzero <= block_size * (1 - MIN_ZERO_SHARE)).astype(np.uint8).tobytes()


def walk_key(path: str) -> tuple[bool, list[str]]:
    """The order in which a backup writes its files' records: depth first, names
    sorted (``datadir.walk``), the control file last."""
    return path == "global/pg_control", path.split("/")
