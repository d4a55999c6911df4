"""The rotation journal survives a crash in the middle of a line: the cut line is
dropped (its put never started) and the next entry starts on a line of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.offline.rotation import Journal, RotationError
from strongroom.pipeline.keys import MasterKey

OLD, NEW = MasterKey.generate(), MasterKey.generate()


def test_entries_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "master.key.rotation"
    Journal.open(path, OLD, NEW).record("local", "c/1/manifest.json", "a" * 64, "b" * 64)
    assert Journal.open(path, OLD, NEW).digests == {("local", "a" * 64): "b" * 64}
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_line_cut_short_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "master.key.rotation"
    Journal.open(path, OLD, NEW).record("local", "c/1/manifest.json", "a" * 64, "b" * 64)
    with path.open("a") as f:
        f.write('{"store": "local", "key": "c/2/man')
    resumed = Journal.open(path, OLD, NEW)
    resumed.record("local", "c/2/manifest.json", "c" * 64, "d" * 64)
    assert Journal.open(path, OLD, NEW).digests == {
        ("local", "a" * 64): "b" * 64,
        ("local", "c" * 64): "d" * 64,
    }


def test_a_cut_header_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "master.key.rotation"
    path.write_text('{"old_key_id": "ab')
    Journal.open(path, OLD, NEW)
    assert Journal.open(path, OLD, NEW).digests == {}


def test_another_rotations_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key.rotation"
    Journal.open(path, OLD, NEW)
    with pytest.raises(RotationError, match="another rotation"):
        Journal.open(path, OLD, MasterKey.generate())


def test_a_copy_with_its_originals_bytes_keeps_its_own_new_digest(tmp_path: Path) -> None:
    """A copy in another store has the same old digest as its original but is sealed anew:
    each store's manifest maps to its own new digest; a row naming no store gets one only
    when a single manifest was rewritten from that digest."""
    journal = Journal.open(tmp_path / "master.key.rotation", OLD, NEW)
    journal.record("local", "c/1/manifest.json", "a" * 64, "b" * 64)
    assert journal.rewritten("", "a" * 64) == "b" * 64
    journal.record("offsite", "c/1/manifest.json", "a" * 64, "e" * 64)
    assert journal.rewritten("local", "a" * 64) == "b" * 64
    assert journal.rewritten("offsite", "a" * 64) == "e" * 64
    assert journal.rewritten("", "a" * 64) is None
    assert journal.leads_to("offsite", "a" * 64, "e" * 64)
    assert not journal.leads_to("offsite", "a" * 64, "b" * 64)
