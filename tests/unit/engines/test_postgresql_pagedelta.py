"""Sub-page deltas in file-level incrementals, without a server: real files of pages
whose bytes change a little (a tuple) or wholly, backed up against the parent chain's
streams and restored newest link first, compared byte for byte."""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import struct
from pathlib import Path

import pytest
import zstandard

from strongroom.engines.base import RestoreInput
from strongroom.engines.postgresql import filestream, pagedelta, parentpages
from strongroom.engines.postgresql.file_method import FileMethod
from strongroom.engines.postgresql.pagedelta import MAX_PARENT_LINKS
from support.pg_filestream import (
    BS,
    Link,
    OffsetSource,
    backup,
    heap_page,
    heap_tuples,
    restore,
    write_pages,
)


def random_page(rng: random.Random, lsn: int) -> bytearray:
    """A page of one LSN whose body is random (so only a delta compresses)."""
    body = bytearray(rng.randbytes(BS))
    body[0:8] = struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF)
    return body


def touched(before: bytes, rng: random.Random, lsn: int, nbytes: int = 40) -> bytearray:
    """``before`` with a new LSN and ``nbytes`` changed somewhere: an updated tuple."""
    after = bytearray(before)
    after[0:8] = struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF)
    at = rng.randrange(64, BS - nbytes)
    after[at : at + nbytes] = rng.randbytes(nbytes)
    return after


def runs(link: Link) -> list[tuple[str, int, int, int]]:
    """``(path, first block, count, kind)`` of every run of the link's page records
    (kind: ``pagedelta.WHOLE``, ``XOR`` or ``REALIGNED``)."""
    raw, out = link.raw, []
    (length,) = struct.unpack("!I", raw[9:13])
    pos = 13 + length
    while raw[pos : pos + 1] != b"l":
        kind = raw[pos : pos + 1]
        (n,) = struct.unpack("!H", raw[pos + 1 : pos + 3])
        path = raw[pos + 3 : pos + 3 + n].decode()
        pos += 3 + n
        if kind == b"d":
            continue
        (size,) = struct.unpack("!Q", raw[pos : pos + 8])
        pos += 8
        if kind == b"f":
            pos += size + 4
            continue
        while True:
            (first,) = struct.unpack("!I", raw[pos : pos + 4])
            pos += 4
            if first == 0xFFFFFFFF:
                pos += 4
                break
            (count,) = struct.unpack("!I", raw[pos : pos + 4])
            pos += 4
            count, delta = filestream.run_kind(count, filestream.REALIGN_FORMAT)
            out.append((path, first, count, delta))
            pos += count * BS
    return out


def header(link: Link) -> dict[str, object]:
    (length,) = struct.unpack("!I", link.raw[9:13])
    return json.loads(link.raw[13 : 13 + length])  # type: ignore[no-any-return]


def stored(link: Link) -> int:
    return len(zstandard.ZstdCompressor(level=1).compress(link.raw))


@pytest.mark.parametrize("workers", [1, 3])
def test_a_chain_of_deltas_restores_every_byte(tmp_path: Path, workers: int) -> None:
    rng = random.Random(7)
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    pages = [random_page(rng, 10) for _ in range(40)]
    write_pages(rel, pages)
    write_pages(src / "base/5/16390", [random_page(rng, 10) for _ in range(3)])
    full, _ = backup(src, None)
    chain = [full]
    states = []
    for round_no, lsn in enumerate((30, 50, 70)):
        # every other page gets a tuple updated; one page is rewritten whole; the
        # table grows by a block
        for i in range(round_no % 2, len(pages), 2):
            pages[i] = touched(pages[i], rng, lsn)
        pages[5] = random_page(rng, lsn)
        pages.append(random_page(rng, lsn))
        write_pages(rel, pages)
        link, changed = backup(src, lsn - 5, parents=chain)
        assert header(link)["format"] == filestream.REALIGN_FORMAT
        assert changed == len(range(round_no % 2, len(pages) - 1, 2)) + (round_no % 2 == 0) + 1
        kinds = {(first, delta) for path, first, _, delta in runs(link) if path.endswith("16384")}
        assert (5, False) in kinds  # a page rewritten whole is not worth a delta
        assert (len(pages) - 1, False) in kinds  # nor one the parent has not got
        assert any(delta for _, delta in kinds)
        chain.append(link)
        states.append(rel.read_bytes())

    for upto in (2, 3, 4):  # every link of the chain restores what it recorded
        target = tmp_path / f"target{upto}"
        target.mkdir()
        restore(target, list(reversed(chain[:upto])), workers)
        assert (target / "base/5/16384").read_bytes() == states[upto - 2]
        assert (target / "base/5/16390").read_bytes() == (src / "base/5/16390").read_bytes()


def test_deltas_store_a_fraction_of_the_pages(tmp_path: Path) -> None:
    rng = random.Random(11)
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    pages = [random_page(rng, 10) for _ in range(200)]
    write_pages(rel, pages)
    full, _ = backup(src, None)
    write_pages(rel, [touched(p, rng, 30) for p in pages])
    whole, _ = backup(src, 20)
    deltas, _ = backup(src, 20, parents=[full])
    assert stored(deltas) < stored(whole) * 0.05, (stored(deltas), stored(whole))


def test_whole_page_incrementals_and_delta_ones_mix_in_a_chain(tmp_path: Path) -> None:
    rng = random.Random(3)
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    pages = [random_page(rng, 10) for _ in range(12)]
    write_pages(rel, pages)
    full, _ = backup(src, None)
    pages = [touched(p, rng, 30) for p in pages]
    write_pages(rel, pages)
    old_style, _ = backup(src, 20)  # format 1, as earlier releases wrote it
    assert header(old_style)["format"] == filestream.FORMAT_VERSION
    pages = [touched(p, rng, 50) if i % 3 else p for i, p in enumerate(pages)]
    write_pages(rel, pages[:10])  # truncated: the parent's last two blocks are gone
    delta, _ = backup(src, 40, parents=[full, old_style])
    assert any(d for *_, d in runs(delta))
    target = tmp_path / "target"
    target.mkdir()
    restore(target, [delta, old_style, full])
    assert (target / "base/5/16384").read_bytes() == rel.read_bytes()


def test_a_new_file_and_a_file_the_parent_holds_only_in_part(tmp_path: Path) -> None:
    """A relation new since the parent has no image: its pages are stored whole; a file
    whose newest parent record is pages resolves the rest from the full."""
    rng = random.Random(5)
    src = tmp_path / "src"
    a = [random_page(rng, 10) for _ in range(6)]
    write_pages(src / "base/5/100", a)
    full, _ = backup(src, None)
    a[2] = touched(a[2], rng, 30)
    write_pages(src / "base/5/100", a)
    inc1, _ = backup(src, 20, parents=[full])
    a = [touched(p, rng, 50) for p in a]
    write_pages(src / "base/5/100", a)
    write_pages(src / "base/5/200", [random_page(rng, 50) for _ in range(3)])
    inc2, _ = backup(src, 40, parents=[full, inc1])
    by_path: dict[str, set[bool]] = {}
    for path, _, _, d in runs(inc2):
        by_path.setdefault(path, set()).add(d)
    assert by_path == {"base/5/100": {True}, "base/5/200": {False}}
    target = tmp_path / "target"
    target.mkdir()
    restore(target, [inc2, inc1, full], workers=2)
    for name in ("100", "200"):
        assert (target / "base/5" / name).read_bytes() == (src / "base/5" / name).read_bytes()


def test_a_delta_without_its_base_is_refused(tmp_path: Path) -> None:
    rng = random.Random(9)
    src = tmp_path / "src"
    pages = [random_page(rng, 10) for _ in range(4)]
    write_pages(src / "base/5/16384", pages)
    full, _ = backup(src, None)
    write_pages(src / "base/5/16384", [touched(p, rng, 30) for p in pages])
    delta, _ = backup(src, 20, parents=[full])
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(filestream.FileStreamError, match="does not hold every page"):
        restore(target, [delta])


def test_a_parent_stream_out_of_walk_order_is_refused(tmp_path: Path) -> None:
    """Deltas are only as right as the parent image: a parent link whose records are
    not in the order the backup walks (so a record could be passed over) stops it."""
    rng = random.Random(1)
    src = tmp_path / "src"
    write_pages(src / "base/5/200", [random_page(rng, 10)])
    write_pages(src / "base/5/100", [random_page(rng, 10)])
    full, _ = backup(src, None)
    raw = full.raw
    # swap the two file records' names (same length): 200 now comes before 100
    i, j = raw.index(b"base/5/100"), raw.index(b"base/5/200")
    swapped = bytearray(raw)
    swapped[i : i + 10], swapped[j : j + 10] = raw[j : j + 10], raw[i : i + 10]
    parent = parentpages.ParentPages([OffsetSource(bytes(swapped))], BS)
    try:
        with pytest.raises(parentpages.ParentStreamError, match="walk order"):
            parent.open("base/5/300")
    finally:
        parent.close()


def test_xor_and_the_choice_of_deltas() -> None:
    a = bytearray(b"\x0f" * BS * 2)
    pagedelta.xor_into(a, b"\x0f" * BS + b"\xf0" * BS)
    assert a == bytes(BS) + b"\xff" * BS
    assert pagedelta.delta_blocks(a, BS) == b"\x01\x00"
    assert pagedelta.walk_key("global/pg_control") > pagedelta.walk_key("pg_xact/0000")
    assert pagedelta.walk_key("base/1/2") < pagedelta.walk_key("base.x")


def heap_pages(rng: random.Random, lsn: int, count: int) -> list[bytearray]:
    """Pages of 50 tuples of 121 random bytes (as a row with an md5 text column)."""
    return [heap_page(lsn, [rng.randbytes(121) for _ in range(50)]) for _ in range(count)]


def pruned(page: bytes, rng: random.Random, lsn: int, dead: int = 3) -> bytearray:
    """``page`` after an update that pruned it: ``dead`` tuples gone (their line pointers
    unused), the rest compacted towards the page's end, and two tuples changed a little."""
    items = heap_tuples(page)
    for i in rng.sample([i for i, t in enumerate(items) if t is not None], dead):
        items[i] = None
    for i in rng.sample([i for i, t in enumerate(items) if t is not None], 2):
        changed = bytearray(items[i] or b"")
        changed[10:14] = rng.randbytes(4)
        items[i] = bytes(changed)
    return heap_page(lsn, items)


def kinds(link: Link, path: str) -> set[int]:
    return {kind for name, _, _, kind in runs(link) if name == path}


def test_pages_whose_tuples_moved_are_stored_as_realigned_deltas(tmp_path: Path) -> None:
    """Pruned pages differ from their parent in thousands of bytes (an XOR delta does not
    pay) but store as realigned deltas; a realigned delta is never the base of another
    delta, so the next link stores those pages whole; every prefix restores every byte."""
    rng = random.Random(23)
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    pages = heap_pages(rng, 10, 100)
    write_pages(rel, pages)
    chain = [backup(src, None)[0]]
    states, expected = [], []
    steps = [
        (30, lambda p: pruned(p, rng, 30), pagedelta.REALIGNED),
        (50, lambda p: pruned(p, rng, 50), pagedelta.WHOLE),  # its parent: a realigned delta
        (70, lambda p: pruned(p, rng, 70, dead=0), pagedelta.XOR),  # over the whole pages
        (90, lambda p: pruned(p, rng, 90), pagedelta.WHOLE),  # pruned, over an XOR delta
    ]
    for lsn, change, kind in steps:
        before = pages
        pages = [change(p) for p in pages]
        xor = bytearray(b"".join(before))
        pagedelta.xor_into(xor, b"".join(pages))
        if kind == pagedelta.REALIGNED:
            assert pagedelta.delta_blocks(xor, BS) == bytes(len(pages))  # XOR does not pay
        write_pages(rel, pages)
        link, changed = backup(src, lsn - 5, parents=chain)
        assert changed == len(pages)
        expected.append(kind)
        states.append(rel.read_bytes())
        chain.append(link)
    assert [kinds(link, "base/5/16384") for link in chain[1:]] == [{k} for k in expected]
    whole, _ = backup(src, 25)  # as the first incremental, without deltas
    assert stored(chain[1]) < stored(whole) * 0.1, (stored(chain[1]), stored(whole))
    for upto in range(2, len(chain) + 1):
        target = tmp_path / f"target{upto}"
        target.mkdir()
        restore(target, list(reversed(chain[:upto])), rng.choice([1, 3]))
        assert (target / "base/5/16384").read_bytes() == states[upto - 2]


def _hostile_page(rng: random.Random, parent: bytes) -> bytearray:
    """A block a tenant's superuser could write: line pointers that overlap, point past
    the block or into the header, odd offsets and lengths, a ``pd_lower`` past the end."""
    page = bytearray(parent)
    if rng.random() < 0.5:  # the parent's tuples, moved anywhere: some land on others
        (lower,) = struct.unpack_from("<H", parent, 12)
        lower = min(max(lower, 24), BS)
        for at in range(24, lower - lower % 4, 4):
            (pointer,) = struct.unpack_from("<I", page, at)
            moved = pointer & ~0x7FFF | rng.randrange(min(lower // 8 + 1, BS // 8 - 1), BS // 8) * 8
            struct.pack_into("<I", page, at, moved)
        return page
    pointers = []
    for _ in range(rng.randrange(0, 80)):
        offset = rng.choice([rng.randrange(0, 1 << 15), rng.randrange(0, BS // 8) * 8])
        length = rng.choice([rng.randrange(0, 1 << 15), rng.randrange(1, 300)])
        pointers.append(offset | rng.randrange(0, 4) << 15 | length << 17)
    struct.pack_into("<H", page, 12, rng.choice([0, 23, 24 + 4 * len(pointers), 0xFFFF]))
    struct.pack_into(f"<{len(pointers)}I", page, 24, *pointers)
    return page


@pytest.mark.parametrize("seed", range(5))
def test_a_realigned_delta_gives_back_any_block(seed: int) -> None:
    """Whatever the blocks hold (tuples moved, random bytes, hostile line pointers), the
    block is its realigned delta completed with the parent's image."""
    rng = random.Random(seed)
    for _ in range(40):
        parent = bytes(heap_pages(rng, 10, 1)[0]) if rng.random() < 0.5 else rng.randbytes(BS)
        q, block = rng.random(), parent
        if q < 0.3:
            with contextlib.suppress(AssertionError, struct.error, ValueError):
                block = bytes(pruned(parent, rng, 20))
        elif q < 0.7:
            block = bytes(_hostile_page(rng, parent))
        elif q < 0.8:
            block = rng.randbytes(BS)
        moved = bytearray(parent)
        pagedelta.realign(moved, block, BS)
        assert moved[:24] == parent[:24]
        delta = bytearray(block)
        pagedelta.xor_into(delta, moved)
        pagedelta.complete_realigned(delta, parent, BS)
        assert delta == block


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("scratch", [False, True])
def test_realigned_deltas_of_unlike_blocks_complete_together(seed: int, scratch: bool) -> None:
    """One batch of blocks whose line pointers end at very different places (a few
    tuples, hundreds, random bytes, hostile pointers) completes as each block alone does;
    the parent's images are left as they were unless they are scratch."""
    rng = random.Random(seed)
    parents, blocks = [], []
    for i in range(48):
        if i % 4 == 0:
            parent = bytes(
                heap_page(10, [rng.randbytes(8) for _ in range(rng.randrange(200, 400))])
            )
        elif i % 4 == 1:
            parent = bytes(heap_page(10, [rng.randbytes(900) for _ in range(rng.randrange(1, 4))]))
        else:
            parent = bytes(heap_pages(rng, 10, 1)[0]) if i % 4 == 2 else rng.randbytes(BS)
        block = parent
        with contextlib.suppress(AssertionError, struct.error, ValueError):
            block = bytes(pruned(parent, rng, 20, dead=min(3, len(heap_tuples(parent)) - 2)))
        if rng.random() < 0.2:
            block = bytes(_hostile_page(rng, parent))
        parents.append(parent)
        blocks.append(block)
    moved = bytearray(b"".join(parents))
    pagedelta.realign(moved, b"".join(blocks), BS)
    delta = bytearray(b"".join(blocks))
    pagedelta.xor_into(delta, moved)
    base = bytearray(b"".join(parents))
    pagedelta.complete_realigned(delta, base, BS, base_is_scratch=scratch)
    assert delta == b"".join(blocks)
    if not scratch:
        assert base == b"".join(parents)
    for parent, block in zip(parents, blocks, strict=True):  # and as each block alone
        one = bytearray(block)
        alone = bytearray(parent)
        pagedelta.realign(alone, block, BS)
        pagedelta.xor_into(one, alone)
        pagedelta.complete_realigned(one, parent, BS)
        assert one == block


@pytest.mark.parametrize("seed", range(3))
def test_heap_blocks_whose_line_pointers_end_apart_complete_together(seed: int) -> None:
    """A batch of heap pages only (1 to 400 tuples): their line pointers end at different
    places, all before the block's end, so only that far of each block is read for them."""
    rng = random.Random(seed)
    sizes = {8: 400, 120: 50, 900: 8}
    parents, blocks = [], []
    for _ in range(48):
        size = rng.choice(list(sizes))
        parent = bytes(
            heap_page(10, [rng.randbytes(size) for _ in range(rng.randrange(1, sizes[size]))])
        )
        tuples = len(heap_tuples(parent))
        block = bytes(pruned(parent, rng, 20, dead=min(3, tuples - 2))) if tuples >= 4 else parent
        parents.append(parent)
        blocks.append(block)
    lowers = {struct.unpack_from("<H", block, 12)[0] for block in blocks}
    assert max(lowers) < BS and len(lowers) > 10  # the narrowed read, over unlike blocks
    moved = bytearray(b"".join(parents))
    pagedelta.realign(moved, b"".join(blocks), BS)
    assert moved != b"".join(parents)  # tuples moved
    delta = bytearray(b"".join(blocks))
    pagedelta.xor_into(delta, moved)
    pagedelta.complete_realigned(delta, bytearray(b"".join(parents)), BS, base_is_scratch=True)
    assert delta == b"".join(blocks)


def test_completing_deltas_and_images_of_different_lengths_is_refused() -> None:
    with pytest.raises(ValueError, match="lengths"):
        pagedelta.complete_realigned(bytearray(BS), bytes(2 * BS), BS)


def heap_file_backed_up(
    tmp_path: Path, seed: int, count: int
) -> tuple[random.Random, Path, list[bytearray], Link]:
    """A data directory with one relation of ``count`` heap pages, and its full backup."""
    rng = random.Random(seed)
    rel = tmp_path / "src" / "base/5/16384"
    pages = heap_pages(rng, 10, count)
    write_pages(rel, pages)
    return rng, rel, pages, backup(tmp_path / "src", None)[0]


def test_a_delta_over_a_realigned_delta_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain where a link holds a delta over a realigned delta (no writer makes one: the
    realigned delta needs its base whole) is refused, by a restore and by the next backup
    reading it as its parent, rather than laid out wrong."""
    rng, rel, pages, full = heap_file_backed_up(tmp_path, 29, 8)
    src = tmp_path / "src"
    pages = [pruned(p, rng, 30) for p in pages]
    write_pages(rel, pages)
    inc1, _ = backup(src, 25, parents=[full])
    assert kinds(inc1, "base/5/16384") == {pagedelta.REALIGNED}
    image = parentpages.ParentPages.image

    def as_if_whole(self: parentpages.ParentPages, *args: object) -> bytearray:
        known = image(self, *args)  # type: ignore[arg-type]
        return known.replace(bytes([pagedelta.VIA_REALIGNED]), bytes([pagedelta.HELD_WHOLE]))

    monkeypatch.setattr(parentpages.ParentPages, "image", as_if_whole)
    pages = [touched(p, rng, 50) for p in pages]
    write_pages(rel, pages)
    inc2, _ = backup(src, 45, parents=[full, inc1])
    monkeypatch.undo()
    assert kinds(inc2, "base/5/16384") == {pagedelta.XOR}
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(filestream.FileStreamError, match="a delta over a delta"):
        restore(target, [inc2, inc1, full])
    write_pages(rel, [touched(p, rng, 70) for p in pages])
    with pytest.raises(parentpages.ParentStreamError, match="over a realigned delta"):
        backup(src, 60, parents=[full, inc1, inc2])


def test_streams_of_format_2_still_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain whose incremental was written before realigned deltas (stream format 2:
    XOR deltas only) restores every byte."""
    rng, rel, pages, full = heap_file_backed_up(tmp_path, 31, 20)
    src = tmp_path / "src"
    monkeypatch.setattr(filestream, "REALIGN_FORMAT", filestream.DELTA_FORMAT)
    monkeypatch.setattr(pagedelta, "realign", lambda *args: None)
    write_pages(rel, [touched(p, rng, 30) for p in pages])
    inc, _ = backup(src, 25, parents=[full])
    monkeypatch.undo()
    assert header(inc)["format"] == filestream.DELTA_FORMAT
    assert kinds(inc, "base/5/16384") == {pagedelta.XOR}
    target = tmp_path / "target"
    target.mkdir()
    restore(target, [inc, full])
    assert (target / "base/5/16384").read_bytes() == rel.read_bytes()


def test_deltas_stop_on_a_file_where_they_do_not_pay(tmp_path: Path) -> None:
    """Every page rewritten (as when pruning moves a page's tuples): none pays, and the
    chain still restores every byte."""
    rng = random.Random(13)
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    count = pagedelta.TRIAL_WINDOW + pagedelta.BACKOFF_FIRST + 600
    write_pages(rel, [random_page(rng, 10) for _ in range(count)])
    full, _ = backup(src, None)
    write_pages(rel, [random_page(rng, 30) for _ in range(count)])
    link, changed = backup(src, 20, parents=[full])
    assert changed == count
    assert not any(delta for *_, delta in runs(link))
    target = tmp_path / "target"
    target.mkdir()
    restore(target, [link, full])
    assert (target / "base/5/16384").read_bytes() == rel.read_bytes()


def test_deltas_back_off_where_they_do_not_pay_and_resume_where_they_do() -> None:
    window, first = pagedelta.TRIAL_WINDOW, pagedelta.BACKOFF_FIRST
    trial = pagedelta.DeltaTrial()
    trial.record(window // 2, window // 2, 0)
    assert trial.wanted(window // 2)  # a window is not judged before it is full
    trial.record(window, window // 2, window // 4)  # 1/4 paid: back off
    assert not trial.wanted(window) and not trial.wanted(window + first - 1)
    assert trial.wanted(window + first)
    trial.record(2 * window + first, window, 0)  # again: twice as long
    assert not trial.wanted(2 * window + 3 * first - 1)
    assert trial.wanted(2 * window + 3 * first)
    trial.record(3 * window + 3 * first, window, window // 2)  # half paid: tried on
    assert trial.wanted(3 * window + 3 * first)
    trial.record(4 * window + 3 * first, window, 0)  # the back-off starts again short
    assert trial.wanted(4 * window + 4 * first)
    long = pagedelta.DeltaTrial()
    end = 0
    for _ in range(12):  # it doubles up to its ceiling
        end += window
        long.record(end, window, 0)
        assert long.wanted(end + pagedelta.BACKOFF_MAX)
        end = end + pagedelta.BACKOFF_MAX


def test_a_rewritten_region_does_not_stop_the_deltas_after_it(tmp_path: Path) -> None:
    """The shape of a table whose first rows were updated again since the parent (pruned
    and compacted pages), the rest touched a tuple each: the first pages are stored whole,
    and the pages after them as deltas; the chain restores every byte."""
    rng = random.Random(19)
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    rewritten = pagedelta.BACKOFF_FIRST
    count = rewritten + 1500
    pages = [random_page(rng, 10) for _ in range(count)]
    write_pages(rel, pages)
    full, _ = backup(src, None)
    pages = [random_page(rng, 30) for _ in range(rewritten)] + [
        touched(p, rng, 30) for p in pages[rewritten:]
    ]
    write_pages(rel, pages)
    link, changed = backup(src, 20, parents=[full])
    assert changed == count
    delta_blocks = [(first, n) for _, first, n, delta in runs(link) if delta]
    assert all(first >= rewritten for first, _ in delta_blocks)
    # one window tried and not paying, one back-off, then every block
    resumed = pagedelta.TRIAL_WINDOW + pagedelta.BACKOFF_FIRST
    assert sum(n for _, n in delta_blocks) == count - resumed
    target = tmp_path / "target"
    target.mkdir()
    restore(target, [link, full])
    assert (target / "base/5/16384").read_bytes() == rel.read_bytes()


def test_a_whole_copy_in_an_older_link_ends_the_file_on_both_sides(tmp_path: Path) -> None:
    """A link holding a file whole (its database not yet known to the chain) ends that
    file's chain for the restore: past its end are zeros, whatever older links hold.
    The backup's parent image must say the same, or a delta is laid on the wrong base."""
    rng = random.Random(17)
    src = tmp_path / "src"
    (src / "base/6").mkdir(parents=True)
    rel = src / "base/6/200"
    full, _ = backup(src, None)  # the file is not there yet
    pages = [random_page(rng, 100) for _ in range(6)]
    write_pages(rel, pages)
    inc1, _ = backup(src, 95, parents=[full], known=["base/6"])  # 6 new blocks
    write_pages(rel, pages[:3])
    inc2, _ = backup(src, 195, parents=[full, inc1], known=[])  # whole, 3 blocks
    stale = [random_page(rng, 50) for _ in range(4)]  # older LSNs: not in the next link
    write_pages(rel, [*pages, *stale])
    inc3, _ = backup(src, 295, parents=[full, inc1, inc2], known=["base/6"])
    pages[1] = touched(pages[1], rng, 400)  # a tuple: a delta against inc2's block
    pages[5] = touched(pages[5], rng, 400)  # past inc2's end: no base but zeros
    write_pages(rel, [*pages, *stale])
    chain = [full, inc1, inc2, inc3]
    deltas, _ = backup(src, 395, parents=chain, known=["base/6"])
    whole, _ = backup(src, 395, known=["base/6"])
    assert (rel.name, 1, 1, True) in [(p.rsplit("/", 1)[1], *r) for p, *r in runs(deltas)]
    restored = []
    for name, newest in (("deltas", deltas), ("whole", whole)):
        target = tmp_path / name
        target.mkdir()
        restore(target, [newest, *reversed(chain)])
        restored.append((target / "base/6/200").read_bytes())
    assert restored[0] == restored[1]


def test_a_parent_chain_too_long_to_read_side_by_side_gets_whole_pages() -> None:
    closed: list[object] = []

    class Source(io.BytesIO):
        def close(self) -> None:
            closed.append(self)
            super().close()

    links = [
        RestoreInput({"method": "pgdata-files"}, Source()) for _ in range(MAX_PARENT_LINKS + 1)
    ]
    assert FileMethod._parent_pages(lambda: links, BS) is None
    assert len(closed) == len(links)


def _page(lsn: int, rng: random.Random, base: bytes | None = None) -> bytes:
    """A page of ``lsn``: ``base`` with a tuple's worth changed, or pruned (its tuples
    moved), or a new page of tuples, or random bytes."""
    q = rng.random()
    if base is not None and q < 0.6:
        if q < 0.3:
            with contextlib.suppress(AssertionError, struct.error, ValueError):
                return bytes(pruned(base, rng, lsn, dead=rng.randrange(0, 4)))
        page = bytearray(base.ljust(BS, b"\0")[:BS])
        at = rng.randrange(8, BS - 40)
        page[at : at + 40] = rng.randbytes(40)
    elif q < 0.8:
        page = heap_page(lsn, [rng.randbytes(rng.randrange(20, 200)) for _ in range(30)])
    else:
        page = bytearray(rng.randbytes(BS))
    page[0:8] = struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF)
    return bytes(page)


def _evolve(files: dict[str, bytes], names: list[str], rng: random.Random, lsn: int) -> None:
    """One step of a data directory's life: files made, dropped, cut (to blocks or not),
    blocks changed a little or wholly, left with old LSNs or zeroed, files grown."""
    for name in names:
        if name not in files:
            if rng.random() < 0.3:
                files[name] = b"".join(_page(lsn, rng) for _ in range(rng.randrange(1, 6)))
            continue
        if rng.random() < 0.08:
            del files[name]
            continue
        data = bytearray(files[name])
        if rng.random() < 0.25:
            blocks = -(-len(data) // BS)
            cut = rng.randrange(0, blocks + 1) * BS
            data = data[: rng.randrange(0, len(data) + 1) if rng.random() < 0.3 else cut]
        for i in range(len(data) // BS):
            block, q = bytes(data[i * BS : (i + 1) * BS]), rng.random()
            if q < 0.4:
                data[i * BS : (i + 1) * BS] = _page(lsn, rng, block)
            elif q < 0.45:
                data[i * BS : (i + 1) * BS] = _page(rng.randrange(1, lsn), rng, block)
            elif q < 0.48:
                data[i * BS : (i + 1) * BS] = bytes(BS)
        if rng.random() < 0.3:
            data += b"".join(_page(lsn, rng) for _ in range(rng.randrange(1, 4)))
        if rng.random() < 0.15:
            data += rng.randbytes(rng.randrange(1, BS))
        files[name] = bytes(data)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    (root / "PG_VERSION").write_text("16\n")
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("seed", range(30))
def test_random_chains_restore_alike_with_deltas_and_without(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every prefix of a random chain restores the same bytes whether its incrementals
    stored deltas or whole pages (the restore without deltas being what earlier
    releases wrote and read), with whole-file records of databases not yet known, cut
    and regrown files, stale LSNs, and the trial's back-off reached early."""
    monkeypatch.setattr(pagedelta, "TRIAL_WINDOW", 3)
    monkeypatch.setattr(pagedelta, "BACKOFF_FIRST", 2)
    monkeypatch.setattr(pagedelta, "BACKOFF_MAX", 4)
    rng = random.Random(seed)
    src = tmp_path / "src"
    names = ["base/5/100", "base/5/100.1", "base/5/101", "base/6/200", "global/300"]
    files = {
        name: b"".join(_page(10, rng) for _ in range(rng.randrange(0, 8)))
        + (rng.randbytes(rng.randrange(1, BS)) if rng.random() < 0.3 else b"")
        for name in names
        if rng.random() < 0.8
    }
    _write_tree(src, files)
    full, _ = backup(src, None)
    with_deltas, whole = [full], [full]
    deltas = realigned = 0
    for step in range(1, rng.randrange(3, 7)):
        lsn = 100 * step
        _evolve(files, names, rng, lsn)
        _write_tree(src, files)
        known = ["base/5"] if rng.random() < 0.7 else ["base/5", "base/6"]
        segment = rng.choice([1, 20_000, 10**9])
        link, _ = backup(src, lsn - 5, segment, parents=with_deltas, known=known)
        deltas += sum(count for *_, count, d in runs(link) if d)
        realigned += sum(count for *_, count, d in runs(link) if d == pagedelta.REALIGNED)
        with_deltas.append(link)
        whole.append(backup(src, lsn - 5, segment, known=known)[0])
        workers = rng.choice([1, 3])
        restored = []
        for tag, chain in (("deltas", with_deltas), ("whole", whole)):
            target = tmp_path / f"{tag}-{step}"
            target.mkdir()
            try:
                restore(target, list(reversed(chain)), workers)
                restored.append(_tree(target))
            except filestream.FileStreamError as exc:
                restored.append({"error": str(exc).encode()})
        assert restored[0] == restored[1], f"step {step}"
    assert seed > 3 or deltas > 0  # the first seeds do store deltas
    assert seed > 3 or realigned > 0  # and realigned ones


def test_a_parent_stream_cut_short_fails_the_backup_with_a_reason(tmp_path: Path) -> None:
    rng = random.Random(21)
    src = tmp_path / "src"
    write_pages(src / "base/5/100", [random_page(rng, 10) for _ in range(8)])
    full, _ = backup(src, None)
    cut = OffsetSource(full.raw[: len(full.raw) // 2])
    parent = parentpages.ParentPages([cut], BS)
    try:
        blocks = parent.open("base/5/100")
        with pytest.raises(parentpages.ParentStreamError, match="ends early"):
            parent.image(blocks - 1, 1, bytearray(BS))
    finally:
        parent.close()


def _short_heap_block(tuples: list[bytes], length: int, lsn: int) -> bytearray:
    """A heap page laid out as if its block were ``length`` bytes long: the last block of
    a file copied while the server was extending it."""
    block = bytearray(length)
    block[0:8] = struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF)
    upper, pointers = length, []
    for data in tuples:
        upper -= -(-len(data) // 8) * 8
        block[upper : upper + len(data)] = data
        pointers.append(upper | 1 << 15 | len(data) << 17)
    struct.pack_into("<HH", block, 12, 24 + 4 * len(pointers), upper)
    struct.pack_into(f"<{len(pointers)}I", block, 24, *pointers)
    return block


@pytest.mark.parametrize("workers", [1, 3])
def test_a_realigned_delta_over_a_short_last_block_restores_its_tail(
    tmp_path: Path, workers: int
) -> None:
    """The parent copied the file whole with its last block short; the child's block keeps
    the same tuples at the full block's end. The realigned delta's completion must write
    the whole block back, tail included."""
    rng = random.Random(5)
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    tuples = [rng.randbytes(120) for _ in range(12)]
    first = heap_page(10, [rng.randbytes(100) for _ in range(20)])
    rel.parent.mkdir(parents=True)
    rel.write_bytes(bytes(first) + bytes(_short_heap_block(tuples, BS - 64, 10)))
    full, _ = backup(src, None)
    write_pages(rel, [first, heap_page(30, tuples)])
    incremental, _ = backup(src, 25, parents=[full])
    assert (rel.name, 1, 1, pagedelta.REALIGNED) in [
        (p.rsplit("/", 1)[1], *r) for p, *r in runs(incremental)
    ]
    target = tmp_path / "target"
    target.mkdir()
    restore(target, [incremental, full], workers=workers)
    assert (target / "base/5/16384").read_bytes() == rel.read_bytes()


@pytest.mark.parametrize("workers", [1, 3])
def test_realigned_and_xor_blocks_interleaved_in_one_link_restore(
    tmp_path: Path, workers: int
) -> None:
    """Pruned pages (realigned deltas) and pages changed in place (XOR deltas) alternate in
    one file: the restore completes every run of them, each with its own base."""
    rng = random.Random(23)
    src = tmp_path / "src"
    rel = src / "base/5/300"
    before = heap_pages(rng, 10, 24)
    write_pages(rel, before)
    full, _ = backup(src, None)
    # pruned (tuples moved) in runs of one or two, changed in place between them
    pages = [pruned(p, rng, 30, dead=0 if n % 3 == 2 else 3) for n, p in enumerate(before)]
    write_pages(rel, pages)
    incremental, _ = backup(src, 25, parents=[full])
    found = [kind for p, _first, _count, kind in runs(incremental) if p.endswith("/300")]
    assert found.count(pagedelta.REALIGNED) >= 6 and found.count(pagedelta.XOR) >= 6, found
    target = tmp_path / "target"
    target.mkdir()
    restore(target, [incremental, full], workers=workers)
    assert (target / "base/5/300").read_bytes() == rel.read_bytes()
