"""PostgreSQL engine: managed servers (initdb/pg_ctl), external servers, physical backups.

Full backups
    ``pg_basebackup -D - -F t -X fetch -c fast``: one tar stream of the data directory with
    the WAL needed to make it consistent (and a ``backup_manifest``), streamed from the
    tool's stdout straight into the sink. The WAL range it reports (start and end point,
    timeline) goes into the metadata with the system identifier and the server version.

Incremental backups: the WAL since the parent
    An incremental is the server's WAL from the parent's stop LSN up to a new end point,
    read over the streaming replication protocol (``START_REPLICATION SLOT … PHYSICAL``
    on a replication connection, through libpq's copy-both mode) and written to the sink
    as it arrives, framed by a small header and a SHA-256 trailer. No temporary copy is
    made. The end point is a WAL record boundary that covers every transaction committed
    before the backup began: the insert position read inside a transaction whose commit
    record follows it and is flushed synchronously before streaming starts.

    A physical replication slot per instance (``strongroom_<id>``, in the connection and
    the metadata) is created before the first full backup starts, so the server keeps the
    WAL that ``pg_basebackup`` fetches at its end and every segment the next incremental
    needs. The slot is moved forward only to what no future backup can need: to a full
    backup's end once it completed (a new full starts a new chain), and to the parent's
    end when an incremental starts (so a failed incremental can be retried from the same
    parent). Managed servers run with ``max_slot_wal_keep_size`` (2GB) so a forgotten
    slot cannot fill the disk; for external servers that limit is the operator's setting
    (``register_external`` records it in the connection). ``destroy_instance`` on an
    external connection drops its slot.

    Why this method rather than page deltas (pages whose LSN is newer than the parent's
    start, as WAL-G's delta backups do):

    * it works for every server the engine can reach, on this host or another, with only
      a role that has the REPLICATION attribute: no access to the data files, no
      superuser, no ``pg_backup_start``. Page deltas need the data files readable on the
      backup host, which holds for managed instances but not for external ones in general;
    * it is exact by construction: WAL replay is PostgreSQL's own recovery, so relation
      truncation, dropped and new files, visibility-map and free-space-map forks,
      ``pg_xact`` and every other non-relation file are handled without a second,
      hand-written notion of "what changed";
    * it needs no parsing of data pages or of the WAL format;
    * an incremental after a small change is small: the WAL of that change (with full
      page images of the pages first touched after a checkpoint; managed servers enable
      ``wal_compression``).

    Its costs: an incremental is as large as the WAL written since the parent, which for
    workloads that update the same rows over and over can exceed the changed pages; the
    server must keep that WAL until the next backup (bounded as above); restoring replays
    the WAL, so the time to restore grows with the chain. Take full backups often enough
    to keep chains short. A new timeline on the server (failover, promotion), another
    system identifier, or WAL the slot no longer holds makes the parent unusable as a
    base, and ``backup`` raises ``BackupError`` saying so.

Restore
    A new data directory is built in the instance home from the full backup's tar,
    extracted while it streams in (``tarfile`` mode ``r|``), and checked with
    ``pg_verifybackup`` against its manifest. Each incremental's WAL is written into
    ``pg_wal`` segment files at its positions (its SHA-256 checked), and the WAL is cut
    at the last backup's stop LSN (the rest of that segment zeroed, later segments
    removed). The server starts in archive recovery (``recovery.signal``, a
    ``restore_command`` that finds nothing, so WAL comes from ``pg_wal`` only), replays
    to exactly that point, and promotes onto a new timeline, so the restored server is
    distinguishable from its source. The engine checks that the new timeline branched at
    the backup's end (otherwise the WAL was incomplete), resets the bootstrap superuser's
    password, then creates the requested databases and users. Configuration files from
    the source are replaced (its ``postgresql.conf`` is kept as ``postgresql.conf.source``)
    with the managed settings, sized from ``pg_control`` so recovery accepts them.

Managed servers
    ``home/data`` (PGDATA), ``home/run`` (unix socket, mode 0700; when that path is too
    long for a socket address, a 0700 directory under /tmp named after the home, checked
    to be the server user's own before use), ``home/log``. TCP
    connections use SCRAM passwords; the local socket inside the home is ``trust``
    (only the server's OS user and root can reach it). PostgreSQL refuses to run as
    root: when the service is root, server processes run as ``postgres`` (or
    ``run_as``) through ``runuser -u <user> --`` as an argv prefix, and the home is owned
    by that user, so each of its parent directories must be traversable by it.
    Tablespaces are not supported (``pg_basebackup`` cannot stream them to stdout).
"""

from strongroom.engines.postgresql.engine import PostgresEngine

__all__ = ["PostgresEngine"]
