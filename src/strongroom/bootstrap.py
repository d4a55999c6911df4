"""The composition root: settings → every concrete adapter, wired into services."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from strongroom.api.edge import EdgeSettings
from strongroom.api.keystone import KeystoneTokens
from strongroom.config import Allowance, Settings
from strongroom.domain.model import JobKind
from strongroom.domain.ports import Clock, JobQueue, UnitOfWorkFactory
from strongroom.engines.allowlist import AllowEntry, AllowList
from strongroom.engines.base import AccountManager
from strongroom.engines.mariadb.users import MariaDbAccounts
from strongroom.engines.postgresql.users import PostgresAccounts
from strongroom.engines.registry import EngineSettings, build_engine_registry
from strongroom.jobs.account_calls import AccountCallConsumer, BrokerAccountTransport
from strongroom.jobs.celery_queue import CeleryJobQueue, make_celery
from strongroom.jobs.handoff import ENV as HANDOFF_ENV
from strongroom.jobs.handoff import SOCKET_NAME, HandOffJobQueue
from strongroom.jobs.inprocess import InProcessJobQueue
from strongroom.metadata_setup import (
    StartupError,
    data_dir_unreachable,
    metadata_sessions,
    open_metadata,
    prepare_data_dir,
    uow_factory,
)
from strongroom.observability.collector import MetadataCollector
from strongroom.observability.listener import exposition_registry
from strongroom.observability.telemetry import PrometheusTelemetry
from strongroom.persistence import migrate
from strongroom.persistence.statistics import SqlStatistics
from strongroom.persistence.unit_of_work import POOL_SIZE, make_engine
from strongroom.pipeline.keys import MasterKey, rotation_journal
from strongroom.services.account_relay import AccountCallServer, RelayedAccounts
from strongroom.services.accounts import AccountService
from strongroom.services.authorization import Authorizer
from strongroom.services.backups import BackupService
from strongroom.services.clock import SystemClock
from strongroom.services.consistency import ConsistencyChecker
from strongroom.services.container import Services
from strongroom.services.copies import CopyService
from strongroom.services.copy_jobs import CopyJobs
from strongroom.services.copy_objects import CopyWriter
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.drills import Driller, DrillService
from strongroom.services.health import Health
from strongroom.services.instances import InstanceService
from strongroom.services.job_handlers import JobHandlers
from strongroom.services.job_history import JobHistory
from strongroom.services.jobs import JobDispatcher
from strongroom.services.leftovers import TemporaryObjectSweeper
from strongroom.services.liveness import LivenessRules, Reaper
from strongroom.services.observed_store import ObservedBackend
from strongroom.services.pitr_archiving import PitrArchiver
from strongroom.services.pitr_policy import PitrService
from strongroom.services.quotas import QuotaService
from strongroom.services.rules import Flavor, ServiceRules
from strongroom.services.scheduler import Scheduler
from strongroom.services.schedules import ScheduleService
from strongroom.services.secrets_box import SecretBox
from strongroom.services.stores import AllowedContainers, StoreCatalog
from strongroom.services.telemetry import NO_TELEMETRY, Telemetry
from strongroom.services.tokens import TokenService
from strongroom.services.transfer import Transfer
from strongroom.services.verification import VerificationService, Verifier
from strongroom.services.wal_archive import WalArchive
from strongroom.storage.base import StorageBackend
from strongroom.storage.config import S3StoreConfig, SwiftStoreConfig
from strongroom.storage.errors import StorageAuthError, StorageError
from strongroom.storage.registry import StoreSet

log = logging.getLogger(__name__)


StoreWrapper = Callable[[str, StorageBackend], StorageBackend]


@dataclass
class Container:
    services: Services
    handlers: JobHandlers
    queue: JobQueue
    stores: StoreCatalog
    settings: Settings
    reaper: Reaper
    uow: UnitOfWorkFactory
    statistics: SqlStatistics
    telemetry: Telemetry = NO_TELEMETRY
    scheduler: Scheduler | None = None
    archiver: PitrArchiver | None = None
    metadata_engine: Engine | None = None  # its connections are closed with the container
    # A worker answers the user, database and root calls API processes relay to it.
    account_calls: AccountCallConsumer | None = None

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.archiver is not None:
            self.archiver.stop()
        self.queue.shutdown()
        if self.services.health is not None:
            self.services.health.close()
        if self.services.external_tokens is not None:
            self.services.external_tokens.close()
        self.stores.close()
        if self.metadata_engine is not None:
            self.metadata_engine.dispose()


def _allow_list(allowances: list[Allowance], *, paths: bool = False) -> AllowList:
    entries = [AllowEntry(a.value, frozenset(a.projects)) for a in allowances]
    return AllowList.of_paths(entries) if paths else AllowList.of(entries)


def _open_stores(
    settings: Settings,
    master: MasterKey,
    wrap_store: StoreWrapper | None = None,
    telemetry: Telemetry = NO_TELEMETRY,
) -> StoreCatalog:
    try:
        store_set = StoreSet.from_configs(settings.stores, settings.default_store)
    except StorageError as exc:
        raise StartupError(f"storage configuration: {exc}") from exc
    wrap = wrap_store or (lambda _name, backend: backend)
    store_set = StoreSet(
        {
            name: ObservedBackend(wrap(name, store_set.get(name)), name=name, telemetry=telemetry)
            for name in store_set.names()
        },
        store_set.default_name,
        store_set.kinds,
    )
    for name in store_set.names():
        try:
            store_set.check_container(name, settings.default_container)
        except StorageError as exc:
            store_set.close()
            raise StartupError(
                f"default_container cannot be used on store {name!r}: {exc} "
                "(set default_container to a name every store accepts)"
            ) from exc
    return StoreCatalog(store_set, master, allowed_containers(settings))


def allowed_containers(settings: Settings) -> AllowedContainers:
    """``default_container`` and each store's own default, and the operator's patterns."""
    defaults = {settings.default_container}
    for store in settings.stores:
        if isinstance(store, SwiftStoreConfig):
            defaults.add(store.default_container)
        elif isinstance(store, S3StoreConfig):
            defaults.add(store.default_bucket)
    return AllowedContainers(frozenset(defaults), tuple(settings.allowed_containers))


def _check_stores(stores: StoreCatalog) -> None:
    """Refuse to start with credentials a store rejects; only warn about an unreachable
    store (it may come back, and backups to it fail with a reason meanwhile)."""
    problems = stores.check_all()
    for name, exc in problems.items():
        problem = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, StorageAuthError):
            stores.close()
            raise StartupError(f"store {name!r} refused the configured credentials ({problem})")
        log.warning("store %r is not reachable now: %s", name, problem)


def rules_from(settings: Settings) -> ServiceRules:
    return ServiceRules(
        backup_quota=settings.backup_quota,
        instance_quota=settings.max_instances,
        running_backups_expire=timedelta(days=settings.running_backups_expires_days),
        page_size=settings.backups_page_size,
        max_page_size=settings.max_page_size,
        max_volume_size=settings.max_volume_size,
        default_container=settings.default_container,
        default_store=settings.default_store or "local",
        flavors=tuple(Flavor(f.id, f.name, f.ram, f.vcpus, f.disk) for f in settings.flavors),
        chunk_size=settings.chunk_size,
        compression_level=settings.compression_level,
        transfer_threads=settings.transfer_threads,
        progress_interval=timedelta(seconds=settings.progress_interval_seconds),
        temporary_object_max_age=timedelta(seconds=settings.temporary_object_max_age_seconds),
        parent_pages_from_remote_stores=settings.postgresql_page_deltas is True,
    )


def _account_managers() -> dict[str, AccountManager]:
    return {"postgresql": PostgresAccounts(), "mariadb": MariaDbAccounts()}


Role = Literal["embedded", "api", "worker", "serving"]


def build(
    settings: Settings,
    *,
    role: Role = "embedded",
    wrap_store: StoreWrapper | None = None,
    clock: Clock | None = None,
    run_scheduler: bool = True,
    telemetry: Telemetry | None = None,
) -> Container:
    """Wire the service for one role.

    * ``embedded``: everything in this process (migrates, runs jobs in threads, recovers
      interrupted jobs on start);
    * ``api``: requests only; jobs go to the broker;
    * ``worker``: runs this host's jobs from the broker (see ``run_worker``);
    * ``serving``: an API process of `serve --workers N`: requests only, on the embedded
      service's metadata; jobs are handed to the process that runs them (``jobs.handoff``),
      which also runs the scheduler.

    The backup scheduler's loop runs in the embedded and api roles unless
    ``run_scheduler`` is false (tests then call ``container.scheduler.tick()`` with their
    own ``clock``).

    ``telemetry`` defaults to Prometheus counters when the metrics listener is on
    (``metrics_port`` not 0); the listener itself is started by the command."""
    preflight(settings, role)
    # The roles that run managed servers of the engines that run as their own OS users.
    if role in ("embedded", "worker") and {"postgresql", "mariadb"} & set(settings.datastores):
        problem = data_dir_unreachable(settings.data_dir)
        if problem:  # SQLite instances and external servers still work: warn, start
            log.warning("%s", problem)
    sessions = metadata_sessions(settings, migrate_now=role == "embedded")
    uow = uow_factory(sessions)
    statistics = SqlStatistics(sessions)
    if telemetry is None:
        telemetry = PrometheusTelemetry() if settings.metrics_port else NO_TELEMETRY
    clock = clock or SystemClock()
    master = master_key(settings)
    secrets = SecretBox(master.derive_key(b"strongroom-connections"))
    stores = _open_stores(settings, master, wrap_store, telemetry)
    _check_stores(stores)
    engines = build_engine_registry(
        EngineSettings(
            sqlite_roots=_allow_list(settings.sqlite_roots, paths=True),
            postgresql_allowed_hosts=_allow_list(settings.postgresql_allowed_hosts),
            postgresql_allowed_data_dirs=_allow_list(
                settings.postgresql_allowed_data_dirs, paths=True
            ),
            mariadb_allowed_hosts=_allow_list(settings.mariadb_allowed_hosts),
            mariadb_allowed_datadirs=_allow_list(settings.mariadb_allowed_datadirs, paths=True),
            bind_address=settings.instance_bind_address,
            timeout=settings.engine_timeout,
            enabled=tuple(settings.datastores),
            postgresql_page_deltas=settings.postgresql_page_deltas is not False,
        )
    )
    requests_only = role in ("api", "serving")
    catalog = DatastoreCatalog(uow, engines, reload_after=10.0 if requests_only else None)
    if requests_only:
        catalog.load()
    else:
        catalog.refresh(exclusive=role == "embedded")
    rules = rules_from(settings)
    authorizer = Authorizer(settings.policy_file)
    dispatcher = JobDispatcher(clock)
    transfer = Transfer(stores, rules)
    handlers = JobHandlers(
        uow=uow,
        clock=clock,
        catalog=catalog,
        transfer=transfer,
        secrets=secrets,
        instances_dir=settings.data_dir / "instances",
        host_id=settings.host_id,
        heartbeat_interval=settings.heartbeat_seconds,
        telemetry=telemetry,
    )
    queue: JobQueue
    if role == "embedded":
        queue = InProcessJobQueue(handlers.run, workers=settings.workers)
    elif role == "serving":
        handoff = os.environ.get(HANDOFF_ENV)
        queue = HandOffJobQueue(Path(handoff) if handoff else settings.data_dir / SOCKET_NAME)
    else:
        assert settings.broker_url is not None
        celery_app = make_celery(
            settings.broker_url.get_secret_value(), prefix=settings.queue_prefix
        )
        queue = CeleryJobQueue(celery_app, prefix=settings.queue_prefix)
    dispatcher.attach(queue)
    # The work runs on the instance's server, through its socket on the instance's host:
    # an API process of a scaled-out service relays it to that host's worker.
    calls_box = SecretBox(master.derive_key(b"strongroom-account-calls"))
    local_accounts = AccountService(
        uow=uow,
        clock=clock,
        authorizer=authorizer,
        catalog=catalog,
        secrets=secrets,
        managers=_account_managers(),
    )
    accounts: AccountService | RelayedAccounts = local_accounts
    if role == "api":
        assert settings.broker_url is not None
        accounts = RelayedAccounts(
            uow=uow,
            box=calls_box,
            transport=BrokerAccountTransport(
                settings.broker_url.get_secret_value(), prefix=settings.queue_prefix
            ),
            timeout=settings.account_call_timeout,
        )
    services = Services(
        backups=BackupService(
            uow=uow,
            clock=clock,
            authorizer=authorizer,
            catalog=catalog,
            stores=stores,
            jobs=dispatcher,
            rules=rules,
        ),
        instances=InstanceService(
            uow=uow,
            clock=clock,
            authorizer=authorizer,
            catalog=catalog,
            jobs=dispatcher,
            secrets=secrets,
            rules=rules,
        ),
        datastores=catalog,
        tokens=TokenService(uow, clock, authorizer),
        session_key=master.derive_key(b"strongroom-dashboard-sessions"),
        accounts=accounts,
        quotas=QuotaService(uow, rules, authorizer),
        external_tokens=(
            KeystoneTokens(settings.keystone, authorizer) if settings.keystone.enabled else None
        ),
        public_endpoint=settings.public_endpoint,
        local_metadata=settings.metadata_url.startswith("sqlite"),
        request_threads=POOL_SIZE,
        health=Health(
            ping_metadata=statistics.ping, stores=stores, timeout=settings.readiness_timeout
        ),
    )
    services = _with_backup_automation(
        services,
        uow=uow,
        clock=clock,
        authorizer=authorizer,
        dispatcher=dispatcher,
        handlers=handlers,
        catalog=catalog,
        transfer=transfer,
        stores=stores,
        instances_dir=settings.data_dir / "instances",
        telemetry=telemetry,
        max_schedules=settings.max_schedules,
        schedule_min_interval=settings.schedule_min_interval,
        drill_timeout=settings.drill_timeout,
    )
    services = replace(
        services,
        pitr=PitrService(
            uow=uow,
            clock=clock,
            authorizer=authorizer,
            catalog=catalog,
            stores=stores,
            rules=rules,
        ),
    )
    temporaries = TemporaryObjectSweeper(uow=uow, stores=stores, rules=rules, clock=clock)
    reaper = Reaper(
        uow=uow,
        clock=clock,
        handlers=handlers,
        dispatcher=dispatcher,
        temporaries=temporaries,
        rules=LivenessRules(
            job_lease=timedelta(seconds=settings.job_lease_seconds),
            redispatch_after=timedelta(seconds=settings.redispatch_after_seconds),
            dispatch_deadline=timedelta(seconds=settings.dispatch_deadline_seconds),
        ),
    )
    container = Container(
        services, handlers, queue, stores, settings, reaper, uow, statistics, telemetry
    )
    container.metadata_engine = sessions.kw.get("bind")
    if role == "worker" and settings.broker_url is not None:
        container.account_calls = AccountCallConsumer(
            settings.broker_url.get_secret_value(),
            prefix=settings.queue_prefix,
            host_id=settings.host_id,
            handle=AccountCallServer(local_accounts, calls_box).handle,
        )
    if role in ("embedded", "api"):
        container.scheduler = _scheduler(
            services,
            uow=uow,
            clock=clock,
            telemetry=telemetry,
            min_interval=settings.schedule_min_interval,
            history=JobHistory(
                uow=uow, clock=clock, keep=timedelta(hours=settings.job_history_hours)
            ),
        )
    if role == "embedded":
        resubmit = handlers.recover()
        temporaries.sweep()  # no reaper runs here: a killed writer's leftovers go on restart
        handlers.start_managed_instances()
        for job in resubmit:
            dispatcher.submit(job)
    elif role == "worker":
        reaper.beat(settings.host_id)
        handlers.start_managed_instances()
    if container.scheduler is not None and run_scheduler:
        container.scheduler.start()
    if role in ("embedded", "worker"):
        # Archiving runs where the instances run, beside their jobs (once per host: not in
        # the serving processes of `serve --workers`).
        container.archiver = PitrArchiver(
            uow=uow,
            clock=clock,
            catalog=catalog,
            secrets=secrets,
            archive=WalArchive(transfer),
            host_id=settings.host_id,
            interval=settings.pitr_interval_seconds,
        )
        if run_scheduler:
            container.archiver.start()
    return container


def _with_backup_automation(
    services: Services,
    *,
    uow: UnitOfWorkFactory,
    clock: Clock,
    authorizer: Authorizer,
    dispatcher: JobDispatcher,
    handlers: JobHandlers,
    catalog: DatastoreCatalog,
    transfer: Transfer,
    stores: StoreCatalog,
    instances_dir: Path,
    telemetry: Telemetry,
    max_schedules: int,
    schedule_min_interval: int,
    drill_timeout: float,
) -> Services:
    """Schedules, verification and restore drills: their services and job handlers."""
    stale_after = transfer.rules.running_backups_expire
    verification = VerificationService(
        uow=uow, clock=clock, authorizer=authorizer, jobs=dispatcher, stale_after=stale_after
    )
    verifier = Verifier(uow=uow, clock=clock, transfer=transfer, telemetry=telemetry)
    handlers.add_handler(JobKind.VERIFY_BACKUP, verifier)
    drills = DrillService(
        uow=uow, clock=clock, authorizer=authorizer, jobs=dispatcher, stale_after=stale_after
    )
    handlers.add_handler(
        JobKind.DRILL_BACKUP,
        Driller(
            uow=uow,
            clock=clock,
            catalog=catalog,
            transfer=transfer,
            instances_dir=instances_dir,
            timeout=drill_timeout,
        ),
    )
    writer = CopyWriter(transfer)
    copies = CopyService(
        uow=uow,
        clock=clock,
        authorizer=authorizer,
        stores=stores,
        writer=writer,
        jobs=dispatcher,
    )
    handlers.use_copies(CopyJobs(uow=uow, clock=clock, transfer=transfer, writer=writer))
    schedules = ScheduleService(
        uow=uow,
        clock=clock,
        authorizer=authorizer,
        backups=services.backups,
        stores=stores,
        copies=copies,
        max_schedules=max_schedules,
        min_interval=schedule_min_interval,
    )
    return replace(
        services, schedules=schedules, verification=verification, drills=drills, copies=copies
    )


def _scheduler(
    services: Services,
    *,
    uow: UnitOfWorkFactory,
    clock: Clock,
    telemetry: Telemetry,
    min_interval: int,
    history: JobHistory,
) -> Scheduler:
    assert services.schedules and services.verification and services.drills
    return Scheduler(
        uow=uow,
        clock=clock,
        schedules=services.schedules,
        verify=services.verification.start,
        drill=services.drills.scheduled,
        min_interval=min_interval,
        telemetry=telemetry,
        history=history,
    )


def metrics_registry(container: Container) -> CollectorRegistry:
    """What this process's metrics listener shows (see strongroom.observability)."""
    telemetry = container.telemetry
    own = telemetry.registry if isinstance(telemetry, PrometheusTelemetry) else None
    collector = MetadataCollector(
        container.statistics,
        worker_alive_for=timedelta(seconds=container.settings.job_lease_seconds),
        now=SystemClock().now,
    )
    return exposition_registry(own=own, metadata=collector)


def build_api_metrics(settings: Settings) -> CollectorRegistry:
    """For the parent of the API processes: their summed values and the metadata series
    (it does no work of its own, so it needs no services)."""
    sessions = metadata_sessions(settings, migrate_now=False)
    collector = MetadataCollector(
        SqlStatistics(sessions),
        worker_alive_for=timedelta(seconds=settings.job_lease_seconds),
        now=SystemClock().now,
    )
    return exposition_registry(own=None, metadata=collector)


def edge_settings(settings: Settings) -> EdgeSettings:
    """What the HTTP edge allows one client and one project."""
    return EdgeSettings(
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        access_log=settings.access_log,
        secure_cookies=settings.secure_cookies,
        max_connections=settings.max_connections,
        blocking_threads=settings.blocking_threads,
        blocking_threads_per_project=settings.blocking_threads_per_project,
        blocking_wait_seconds=settings.blocking_wait_seconds,
    )


def preflight(settings: Settings, role: Role) -> None:
    """What stops ``role`` from starting and can be told from the settings and the data
    dir alone (`strongroom api` asks before it starts its processes)."""
    if role in ("api", "worker") and settings.broker_url is None:
        raise StartupError("scaled-out roles need broker_url (e.g. amqp://user:pw@host:5672/vhost)")
    if rotation_journal(settings.key_file).exists():
        raise StartupError("a master key rotation is unfinished: run `strongroom key rotate`")


def master_key(settings: Settings) -> MasterKey:
    """The service's master key, made on first use; a key file that cannot be read or
    holds no key stops the start with one line naming it."""
    try:
        return MasterKey.load_or_create(settings.key_file)
    except (ValueError, OSError) as exc:
        raise StartupError(f"{exc} (setting master_key_file)") from exc


def build_tokens(settings: Settings) -> TokenService:
    """Just the token store, for the `token` commands (no engines, no workers)."""
    uow = open_metadata(settings, migrate_now=settings.broker_url is None)
    return TokenService(uow, SystemClock())


def upgrade_schema(settings: Settings) -> None:
    """`strongroom db upgrade`: apply the Alembic migrations."""
    prepare_data_dir(settings)  # where the SQLite file (and the master key) go
    migrate.upgrade(make_engine(settings.metadata_url))


def build_checker(settings: Settings) -> ConsistencyChecker:
    """The metadata database and the stores, for `strongroom check` (no engines, no jobs)."""
    uow = open_metadata(settings, migrate_now=settings.broker_url is None)
    master = master_key(settings)
    return ConsistencyChecker(
        uow=uow, stores=_open_stores(settings, master), rules=rules_from(settings)
    )


def build_verifier(settings: Settings) -> Verifier:
    """The metadata database and the stores, for `strongroom check --read-data`."""
    uow = open_metadata(settings, migrate_now=settings.broker_url is None)
    master = master_key(settings)
    stores = _open_stores(settings, master)
    return Verifier(uow=uow, clock=SystemClock(), transfer=Transfer(stores, rules_from(settings)))


def build_store_catalog(settings: Settings) -> StoreCatalog:
    """The configured stores and the existing master key, for commands that only write or
    read objects (`strongroom metadata backup`)."""
    return _open_stores(settings, MasterKey.load(settings.key_file))


def build_recovery(
    settings: Settings, master: MasterKey
) -> tuple[sessionmaker[Session], UnitOfWorkFactory, StoreCatalog]:
    """The metadata database and the stores, for `catalog rebuild` and `key rotate`."""
    sessions = metadata_sessions(settings, migrate_now=settings.broker_url is None)
    return sessions, uow_factory(sessions), _open_stores(settings, master)
