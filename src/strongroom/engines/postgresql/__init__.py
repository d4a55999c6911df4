"""PostgreSQL engine: managed servers (initdb/pg_ctl), external servers, physical backups.

Two ways to back up, chosen per server:

File level (servers whose data directory this host can read)
    Managed servers, and external ones registered with ``data_dir`` inside the operator's
    ``postgresql_allowed_data_dirs``. The method of pgBackRest, ``pg_probackup`` and
    WAL-G's delta backups, in one stream (:mod:`filestream`):

    * a replication connection creates a *temporary* physical slot (``RESERVE_WAL``), so
      the server keeps the backup's WAL until it is streamed and nothing once the
      connection closes (no WAL kept between backups);
    * ``pg_backup_start(fast checkpoint)`` on a session held open; the files are read
      straight from the data directory (:mod:`datadir` says which, following
      ``pg_basebackup``), ``global/pg_control`` last; ``pg_backup_stop`` gives the
      label, written after the files;
    * the WAL window ``[start of the redo point's page, stop)`` is streamed through the
      slot after the label (the WAL-range format below), so each backup restores on its
      own to a consistent state.

    An incremental reads every file too, but writes for relation main forks only the
    pages whose LSN is at or after the *parent's start* (the parent's redo point): every
    change after that point is either already in a page's LSN or, if it happened during
    this backup, in this backup's WAL window. Other files (free space and visibility maps,
    ``pg_xact``, …) are small and copied whole (visibility-map bits are cleared without
    a new page LSN, so its pages cannot be filtered). A database created with
    ``STRATEGY FILE_COPY`` keeps its template's old LSNs: only databases committed before
    the parent's copy began (the parent's ``databases``) are filtered, others are copied
    whole. Truncated, removed and new files follow from the file list every backup
    carries. Restore writes the newest link first and each block once, checks that every
    block of every file came from some link, places the newest label and WAL window and
    recovers: replay covers one backup's window, not the chain's history.

    Costs: reading every file for an incremental (sequential I/O, cheap next to storing
    it); an update spread over every page of a table stores every page, as a file-level
    tool would.

Through the replication protocol (external servers on other hosts)
    Full: ``pg_basebackup -D - -F t -X fetch -c fast``: one tar stream of the data
    directory with the WAL needed to make it consistent (and a ``backup_manifest``). The
    WAL range it reports (start and end point, timeline) goes into the metadata.

    Incremental: the server's WAL from the parent's stop LSN up to a new end point, read
    over the streaming replication protocol (``START_REPLICATION SLOT … PHYSICAL`` through
    libpq's copy-both mode) and written to the sink as it arrives, framed by a small
    header and a SHA-256 trailer. The end point is a WAL record boundary that covers every
    transaction committed before the backup began: the insert position read inside a
    transaction whose commit record follows it and is flushed synchronously.

    A physical replication slot per registration (``strongroom_<id>``) is created before
    the first full backup starts, so the server keeps the WAL ``pg_basebackup`` fetches
    and every segment the next incremental needs; it moves forward only to what no future
    backup can need (a full backup's end; the parent's end when an incremental starts).
    For external servers the size limit is the operator's ``max_slot_wal_keep_size``;
    ``destroy_instance`` drops the slot. This needs nothing but a role with REPLICATION,
    and replay is PostgreSQL's own recovery; its costs are that an incremental is as
    large as the WAL written since the parent (full-page images included) and that a
    restore replays the whole chain's WAL. A new timeline, another system identifier, or
    WAL the slot no longer holds makes a parent unusable, and ``backup`` says so.

Restore
    A new data directory is built in the instance home: from the file-level chain as
    above, or from the tar (extracted as it streams in, then ``pg_verifybackup``) with
    each incremental's WAL written into ``pg_wal`` at its positions (SHA-256 checked).
    The WAL is cut at the last backup's stop LSN (the rest of that segment zeroed, later
    segments removed). The server starts in archive recovery (``recovery.signal``, a
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
    Tablespaces are not supported (``pg_basebackup`` cannot stream them to stdout, and
    the file-level reader refuses links in ``pg_tblspc``).
"""

from strongroom.engines.postgresql.engine import PostgresEngine

__all__ = ["PostgresEngine"]
