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

Managed servers and who runs as whom
    ``home/data`` (PGDATA), ``home/log``, and the unix socket in ``home/run`` (when that
    path is too long for a socket address, a directory under /tmp named after the home,
    made through a descriptor and checked to be the server user's own before use). When
    the service runs as root, each managed server runs as an OS user of its own
    (``sr-<12 hex>``, :mod:`strongroom.engines.identity`), created with the instance,
    recorded in its connection (``os_user``) and removed with it; the home, data, log and
    socket directories are 0700 and that user's. ``initdb``, ``pg_ctl`` and the server
    run as that user through ``runuser -u <user> --`` (an argv prefix, no shell) with
    the minimal environment of :func:`process.minimal_env`: nothing of the service's
    environment reaches ``/proc/<postmaster>/environ``. So a tenant that is superuser
    of its server (``COPY … FROM PROGRAM``) acts as a user that owns its own home and
    nothing else. When the service is not root, everything runs as the service's user
    and there is no such separation.

    No ``trust`` authentication: the local socket and TCP both need SCRAM passwords; the
    service uses the superuser password sealed in the connection. A restore resets the
    source's superuser password through a ``peer`` map that lets only the service's own
    OS user in as that role, then writes the final ``pg_hba.conf`` and reloads.
    Requested users and databases are checked first (:mod:`names`: no ``postgres``,
    ``pg_*``, service or template names); roles are created ``NOSUPERUSER NOCREATEDB
    NOCREATEROLE NOREPLICATION NOBYPASSRLS`` and an existing role is never altered
    (:mod:`accounts`). Servers made before these rules (run by ``postgres``, ``trust``
    on the socket) are stopped, given their own user and SCRAM when they next start.

    Whatever root writes or reads in a home goes through a directory descriptor and
    never follows a link (:mod:`server`, :mod:`strongroom.engines.beneath`); a file-level
    backup walks PGDATA the same way (:func:`datadir.walk`): each file is opened beneath
    its directory's descriptor and its type and owner are checked on that descriptor, and
    ``global/pg_control`` must hold the server's system identifier. A directory swapped
    for a link during a backup fails it with a reason. Tablespaces are not supported
    (``pg_basebackup`` cannot stream them to stdout, and the file-level reader refuses
    links in ``pg_tblspc``), so no link is ever followed.

Modules
    :mod:`engine` the engine boundary: picks the method per server;
    :mod:`server` one managed server: layout, OS identity, ``pg_ctl``, its files;
    :mod:`accounts` and :mod:`names` requested users and databases;
    :mod:`external` registering and releasing external servers;
    :mod:`session` connections, tool environments, facts a backup records;
    :mod:`methods` method names and chain rules;
    :mod:`file_method` file-level backups and their restore (with :mod:`datadir`,
    :mod:`filestream`, :mod:`writeback`);
    :mod:`replication_method` ``pg_basebackup`` and WAL ranges and their restore (with
    :mod:`tarstream`, :mod:`walstream`);
    :mod:`restore` what every restore does after its method laid the chain out.
"""

from strongroom.engines.postgresql.engine import PostgresEngine

__all__ = ["PostgresEngine"]
