"""PostgresEngine rules that need no server: allow-lists, version checks, tar safety,
configuration, failure-reason parsing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from strongroom.engines.errors import (
    ExternalNotAllowedError,
    IncompatibleBackupError,
    InvalidExternalError,
    RestoreError,
)
from strongroom.engines.postgresql import (
    PostgresEngine,
    cluster,
    methods,
    replication_method,
    session,
    tarstream,
)


def _engine(**kw: object) -> PostgresEngine:
    eng = PostgresEngine(**kw)  # type: ignore[arg-type]
    eng._version = ("15", "15.4")  # as detect() would set it
    eng._bin_dir = Path("/nonexistent")
    return eng


def test_external_not_allowed_by_default() -> None:
    with pytest.raises(ExternalNotAllowedError, match="allowed hosts list is empty"):
        _engine().register_external(
            {"host": "db.example", "port": 5432, "user": "u", "password": "p"}, project_id="p1"
        )


def test_external_host_must_be_listed() -> None:
    eng = _engine(allowed_hosts=["10.0.0.5"])
    with pytest.raises(ExternalNotAllowedError, match=r"'10\.0\.0\.6' is not in"):
        eng.register_external({"host": "10.0.0.6", "user": "u", "password": "p"}, project_id="p1")
    with pytest.raises(InvalidExternalError, match="port"):
        eng.register_external({"host": "10.0.0.5", "port": "x", "user": "u"}, project_id="p1")
    with pytest.raises(InvalidExternalError, match="user is required"):
        eng.register_external({"host": "10.0.0.5", "port": 5432}, project_id="p1")


# What a pg_basebackup full records (replication_method._full_backup), PostgreSQL 15.
BASEBACKUP = {
    "method": methods.REPLICATION_FULL,
    "format": 1,
    "start_lsn": "0/2000028",
    "stop_lsn": "0/2000100",
    "timeline": 1,
    "system_identifier": "1",
    "slot": "strongroom_ab12cd34",
    "stream_bytes": 4096,
    "server_version_num": 150004,
    "server_version": "15.4",
    "server_major": "15",
    "wal_segment_size": 16777216,
    "block_size": 8192,
    "data_checksums": False,
    "bootstrap_superuser": "postgres",
}


def test_check_restorable() -> None:
    eng = _engine()
    eng.check_restorable(BASEBACKUP)
    with pytest.raises(IncompatibleBackupError) as info:
        eng.check_restorable({**BASEBACKUP, "server_major": "14"})
    assert str(info.value) == "backup is from PostgreSQL 14, this host runs 15"
    with pytest.raises(IncompatibleBackupError, match="method"):
        eng.check_restorable({**BASEBACKUP, "method": "mariabackup"})
    with pytest.raises(IncompatibleBackupError, match="timeline"):
        eng.check_restorable({**BASEBACKUP, "timeline": "1"})


def test_chain_gaps_are_refused_before_anything_is_done(tmp_path: Path) -> None:
    from strongroom.engines.base import InstanceRequest, RestoreInput

    base = BASEBACKUP
    full = dict(base, method=methods.REPLICATION_FULL, stop_lsn="0/3000100")
    inc = dict(
        base, method=methods.REPLICATION_INCREMENTAL, start_lsn="0/3000200", stop_lsn="0/4000000"
    )
    with pytest.raises(RestoreError, match="gap"):
        _engine().restore_instance(
            tmp_path / "home",
            [RestoreInput(full, io.BytesIO()), RestoreInput(inc, io.BytesIO())],
            InstanceRequest("x"),
        )
    assert not (tmp_path / "home").exists()


def test_public_view_has_no_password() -> None:
    conn = {
        "managed": True,
        "host": "127.0.0.1",
        "port": 5433,
        "socket_dir": "/x",
        "superuser": "postgres",
        "password": "s3cret",
        "users": ["a"],
        "databases": ["d"],
    }
    view = _engine().public_view(conn)
    assert view == {
        "managed": True,
        "host": "127.0.0.1",
        "port": 5433,
        "databases": ["d"],
        "users": ["a"],
    }
    ext = {
        "managed": False,
        "host": "h",
        "port": 1,
        "user": "u",
        "password": "s3cret",
        "database": "db",
    }
    assert "s3cret" not in repr(_engine().public_view(ext))


def _tar(*members: tuple[str, bytes | None, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc"
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def test_tar_extract_streams_plain_files(tmp_path: Path) -> None:
    data = _tar(
        ("base", None, tarfile.DIRTYPE),
        ("base/1", b"x" * 5000, tarfile.REGTYPE),
        ("PG_VERSION", b"15\n", tarfile.REGTYPE),
    )
    names = tarstream.extract(io.BytesIO(data), tmp_path, None)
    assert names == ["base", "base/1", "PG_VERSION"]
    assert (tmp_path / "base" / "1").read_bytes() == b"x" * 5000
    assert (tmp_path / "base" / "1").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "member",
    [
        ("../escape", b"x", tarfile.REGTYPE),
        ("/abs", b"x", tarfile.REGTYPE),
        ("link", None, tarfile.SYMTYPE),
    ],
)
def test_tar_extract_refuses_unsafe_members(
    tmp_path: Path, member: tuple[str, bytes | None, bytes]
) -> None:
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(tarstream.TarStreamError):
        tarstream.extract(io.BytesIO(_tar(member)), target, None)
    assert not (tmp_path / "escape").exists()


def test_hba_uses_scram_for_tcp() -> None:
    hba = cluster.render_hba("127.0.0.1")
    assert "127.0.0.1/32  scram-sha-256" in hba and "0.0.0.0/0" not in hba
    assert "trust" not in hba and "peer" not in hba
    assert "local   all          all            scram-sha-256" in hba
    assert "0.0.0.0/0  scram-sha-256" in cluster.render_hba("0.0.0.0")


def test_conf_quoting() -> None:
    text = cluster.render_conf({"port": 5433, "unix_socket_directories": "/tmp/it's"})
    assert "port = 5433" in text and "'/tmp/it''s'" in text


def test_basebackup_stderr_parsing() -> None:
    stderr = (
        "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 3\n"
        "pg_basebackup: write-ahead log end point: 0/2000100\n"
    )
    start = replication_method.START_RE.search(stderr)
    end = replication_method.END_RE.search(stderr)
    assert start and end
    assert (start.group(1), start.group(2), end.group(1)) == ("0/2000028", "3", "0/2000100")


def test_scrub() -> None:
    assert session.scrub("failed for pw hunter2", "hunter2", None) == "failed for pw ***"
