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

Streams that carry deltas are file-level stream format 2 or 3: a run's block count with
:data:`DELTA_RUN` set holds deltas, without it whole blocks.

A page whose tuples moved (pruned since the parent: the survivors compacted towards the
page's end) differs from its parent in thousands of bytes, though its tuples did not
change. Format 3 adds *realigned* deltas (:data:`REALIGNED_RUN`): the block XORed with
the parent's image after each of the parent's tuples is moved to where the block's own
line pointer of the same number puts it (:func:`realign`). That needs the parent's image
itself, not a delta of it, so a realigned delta is only stored over a block the parent
chain's newest link holding it holds whole, and a restore completes it when that link's
copy is laid out.
"""

from __future__ import annotations

from typing import Any

DELTA_RUN = 0x80000000  # in a format 2 run's block count: the blocks are deltas
REALIGNED_RUN = 0x40000000  # in format 3 also: the blocks are realigned deltas
# What a block of a run is.
WHOLE, XOR, REALIGNED = 0, 1, 2
# How the parent chain's image of a block is known (``ParentPages.image``): not at all;
# through XOR deltas over a whole copy; as a whole copy in the newest link holding it;
# through a realigned delta. Over the first two an XOR delta may be stored, over the
# third a realigned one too, over the last neither (a restore completes a delta with
# the next older copy, and a realigned one needs that copy whole).
UNKNOWN, VIA_XOR, HELD_WHOLE, VIA_REALIGNED = 0, 1, 2, 3
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


def xor_into(target: bytearray | memoryview, data: bytes | bytearray | memoryview) -> None:
    """``target ^= data`` bytewise (same lengths)."""
    import numpy as np  # 60 ms to import: only backups and restores with deltas pay it

    out = np.frombuffer(target, dtype=np.uint8)
    np.bitwise_xor(out, np.frombuffer(data, dtype=np.uint8), out=out)


def delta_blocks(delta: bytearray | memoryview, block_size: int) -> bytes:
    """Per block of ``delta``, 1 where storing it as a delta pays (enough zero bytes)."""
    import numpy as np

    blocks = np.frombuffer(delta, dtype=np.uint8).reshape(-1, block_size)
    limit = block_size * (1 - MIN_ZERO_SHARE)
    # Row by row: count_nonzero along an axis sums a boolean copy, five times slower.
    return bytes([int(np.count_nonzero(block)) <= limit for block in blocks])


# PageHeaderData is 24 bytes; pd_lower (u16 at 12) ends the line pointers that follow it.
# A line pointer is a u32: offset (15 bits), flags (2), length (15); LP_NORMAL is 1.
# Tuples start MAXALIGNed, so they are moved as 8-byte words. The server's byte order is
# read as little-endian: on another, no line pointer matches and nothing moves.
PAGE_HEADER = 24
LP_NORMAL = 1


def realign(bases: bytearray | memoryview, heads: bytes | bytearray | memoryview, bs: int) -> None:
    """Move the tuples of each block of ``bases`` (in place) to where the block of
    ``heads`` with the same index keeps the tuple of the same line pointer number: where
    both line pointers are normal, of the same length, 8-byte aligned and inside the
    block, and the tuple lands above ``heads``' line pointers. A block whose tuples would
    land on one another keeps its bytes. Only ``heads``' header and line pointers are
    read, so a restore gets them from a realigned delta XORed with the parent's image
    (which this never changes below them) before it realigns that image."""
    import numpy as np

    count = len(bases) // bs
    if count == 0:
        return
    base = np.frombuffer(bases, dtype=np.uint8, count=count * bs).reshape(count, bs)
    head = np.frombuffer(heads, dtype=np.uint8, count=count * bs).reshape(count, bs)
    _realign(bases, base, head, bs)


def _realign(bases: bytearray | memoryview, base: Any, head: Any, bs: int) -> None:
    """:func:`realign` on ``base``, the blocks of ``bases`` as a (count, bs) array, after
    ``head``: per block, its first bytes at least as far as its line pointers end."""
    import numpy as np

    lower, head_lp = _line_pointers(head, bs)
    _, base_lp = _line_pointers(base, bs)
    width = min(head_lp.shape[1], base_lp.shape[1])
    head_lp, base_lp = head_lp[:, :width], base_lp[:, :width]
    to, length = head_lp & 0x7FFF, head_lp >> 17
    source = base_lp & 0x7FFF
    words = (length + 7) // 8
    moves = (
        (head_lp >= 0)
        & (base_lp >= 0)
        & ((head_lp >> 15) & 3 == LP_NORMAL)
        & ((base_lp >> 15) & 3 == LP_NORMAL)
        & (length == base_lp >> 17)
        & (length > 0)
        & (to % 8 == 0)
        & (source % 8 == 0)
        & (to != source)
        & (to >= lower[:, None])
        & (to + 8 * words <= bs)
        & (source + 8 * words <= bs)
    )
    block, slot = np.nonzero(moves)
    if len(block) == 0:
        return
    start, size = to[block, slot], 8 * words[block, slot]
    order = np.lexsort((start, block))
    block, slot, start, size = block[order], slot[order], start[order], size[order]
    overlap = (block[1:] == block[:-1]) & (start[1:] < start[:-1] + size[:-1])
    if overlap.any():
        keep = ~np.isin(block, block[1:][overlap])
        block, slot, start, size = block[keep], slot[keep], start[keep], size[keep]
        if len(block) == 0:
            return
    # Tuples that moved together (a run of them shifted by the dead space below) are
    # copied as one range: a few per page.
    origin = source[block, slot]
    begins = np.ones(len(block), dtype=bool)
    begins[1:] = (
        (block[1:] != block[:-1])
        | (start[1:] != start[:-1] + size[:-1])
        | (origin[1:] - start[1:] != origin[:-1] - start[:-1])
    )
    at = np.flatnonzero(begins)
    lengths = np.add.reduceat(size, at).tolist()
    targets = (block[at] * bs + start[at]).tolist()
    origins = (block[at] * bs + origin[at]).tolist()
    view = memoryview(bases).cast("B")
    # Every range is read before any is written (one's target may be another's source):
    # a copy of each, a few per page, not of the whole batch.
    moving = [bytes(view[at : at + n]) for at, n in zip(origins, lengths, strict=True)]
    for target, data in zip(targets, moving, strict=True):
        view[target : target + len(data)] = data


def realign_blocks(
    delta: bytearray | memoryview, pages: bytes | memoryview, picked: bytes, bs: int
) -> bytes:
    """Realigned deltas for the blocks ``picked`` (1 per block) of ``delta``, each block
    of which holds the XOR of the parent's image with the block of ``pages``: written
    into ``delta`` where they pay. Returns, per block, 1 where one was written. The picked
    blocks are realigned together: one call per batch, not per run of them."""
    import numpy as np

    count = len(pages) // bs
    chosen = np.flatnonzero(np.frombuffer(picked, dtype=np.uint8, count=count))
    written = np.zeros(count, dtype=np.uint8)
    if len(chosen):
        new = np.frombuffer(pages, dtype=np.uint8, count=count * bs).reshape(count, bs)[chosen]
        rows = np.frombuffer(delta, dtype=np.uint8, count=count * bs).reshape(count, bs)
        images = (rows[chosen] ^ new).reshape(-1)  # the parent's images of those blocks
        realign(images.data, new.reshape(-1).data, bs)
        images ^= new.reshape(-1)
        realigned = images.reshape(-1, bs)
        pays = np.frombuffer(delta_blocks(images.data, bs), dtype=np.uint8).astype(bool)
        rows[chosen[pays]] = realigned[pays]
        written[chosen[pays]] = 1
    return written.tobytes()


def complete_realigned(
    delta: bytearray | memoryview,
    base: bytes | bytearray | memoryview,
    bs: int,
    *,
    base_is_scratch: bool = False,
) -> None:
    """``delta``, realigned deltas of whole blocks, becomes the blocks themselves, given
    the older link's whole copy of them (``base``, as long; realigned in place, and so
    changed, when ``base_is_scratch``: then it must be writable)."""
    import numpy as np

    if len(delta) != len(base):
        raise ValueError(f"deltas and images of different lengths ({len(delta)}, {len(base)})")
    count = len(delta) // bs
    if count == 0:  # no whole block: nothing moves
        xor_into(delta, base)
        return
    deltas = np.frombuffer(delta, dtype=np.uint8, count=count * bs).reshape(count, bs)
    bases = np.frombuffer(base, dtype=np.uint8, count=count * bs).reshape(count, bs)
    # Only the blocks' headers and line pointers are read of the blocks (see realign):
    # XORed as far as the furthest of them ends, not whole.
    lower = (deltas[:, 12] ^ bases[:, 12]).astype(np.int64)
    lower |= (deltas[:, 13] ^ bases[:, 13]).astype(np.int64) << 8
    end = int(np.clip(lower, PAGE_HEADER, bs).max())
    heads = deltas[:, :end] ^ bases[:, :end]
    moved = bytearray(base) if isinstance(base, bytes) or not base_is_scratch else base
    moved_blocks = np.frombuffer(moved, dtype=np.uint8, count=count * bs).reshape(count, bs)
    _realign(moved, moved_blocks, heads, bs)
    xor_into(delta, moved)


def _line_pointers(pages: Any, bs: int) -> tuple[Any, Any]:
    """Per block, where its line pointers end, and its line pointers as int64 (-1 past
    the last)."""
    import numpy as np

    lower = pages[:, 12].astype(np.int64) | (pages[:, 13].astype(np.int64) << 8)
    lower = np.clip(lower, PAGE_HEADER, bs)
    numbers = (lower - PAGE_HEADER) // 4
    width = int(numbers.max())
    raw = np.ascontiguousarray(pages[:, PAGE_HEADER : PAGE_HEADER + 4 * width])
    pointers = raw.view("<u4").astype(np.int64)
    pointers[np.arange(width)[None, :] >= numbers[:, None]] = -1
    return lower, pointers


def walk_key(path: str) -> tuple[bool, list[str]]:
    """The order in which a backup writes its files' records: depth first, names
    sorted (``datadir.walk``), the control file last."""
    return path == "global/pg_control", path.split("/")
