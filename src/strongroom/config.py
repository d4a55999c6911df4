"""Typed settings, read once at the edge (cli) and passed down. Env prefix STRONGROOM_."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from strongroom.storage.config import DEFAULT_CONTAINER, LocalStoreConfig, StoreSettings


class FlavorSettings(BaseModel):
    id: str
    name: str
    ram: int = 1024
    vcpus: int = 1
    disk: int = 0


DEFAULT_FLAVORS = [
    FlavorSettings(id="1", name="tiny", ram=512, vcpus=1),
    FlavorSettings(id="2", name="small", ram=2048, vcpus=1),
    FlavorSettings(id="3", name="medium", ram=4096, vcpus=2),
    FlavorSettings(id="4", name="large", ram=8192, vcpus=4),
    FlavorSettings(id="5", name="xlarge", ram=16384, vcpus=8),
    FlavorSettings(id="6", name="xxlarge", ram=32768, vcpus=16),
]


class Allowance(BaseModel):
    """One entry of an external-instance allow-list: a host or a directory (``value``; TOML
    may say ``host`` or ``path``), and the projects it serves (none: every project).
    A plain string is an entry for every project."""

    value: str
    projects: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _from_plain(cls, data: Any) -> Any:
        if isinstance(data, str | os.PathLike):
            return {"value": os.fspath(data)}
        if isinstance(data, dict) and "value" not in data:
            named = {k: data[k] for k in ("host", "path") if k in data}
            if len(named) == 1:
                rest = {k: v for k, v in data.items() if k not in named}
                return {"value": next(iter(named.values())), **rest}
        return data


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})  # pydantic's words for a bool
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _listed(value: Any) -> Any:
    """A list setting given as one string (an environment variable): a JSON list, or
    comma-separated values."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


AllowanceList = Annotated[list[Allowance], NoDecode]


class KeystoneSettings(BaseModel):
    """The ``[keystone]`` table: how X-Auth-Token is validated in an OpenStack cloud. Option
    names are keystonemiddleware's ``[keystone_authtoken]`` ones, so a Trove operator's values
    carry over. The service's own account (``username``…) needs the ``service`` or ``admin``
    role to validate other users' tokens."""

    enabled: bool = False
    auth_url: str | None = None
    auth_type: Literal["password"] = "password"
    username: str | None = None
    password: SecretStr | None = None
    project_name: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str | None = None
    interface: str = "internal"  # which identity endpoint of the catalog validates tokens
    # Seconds a validated token is trusted (0: never).
    token_cache_time: int = Field(default=300, ge=0)
    http_connect_timeout: float = Field(default=5.0, gt=0)  # seconds to reach Keystone
    http_request_max_retries: int = Field(default=1, ge=0)
    # Seconds a validation may take (then 503).
    validation_timeout: float = Field(default=10.0, gt=0)
    cache_max_tokens: int = Field(default=10_000, gt=0)  # validated tokens kept in memory at most

    @model_validator(mode="after")
    def _complete(self) -> KeystoneSettings:
        if self.enabled:
            needed = ("auth_url", "username", "password", "project_name")
            missing = [name for name in needed if getattr(self, name) is None]
            if missing:
                raise ValueError(f"[keystone] is enabled but lacks {', '.join(missing)}")
        return self


class Settings(BaseSettings):
    """Precedence: command-line values, then STRONGROOM_* environment variables, then the
    TOML file named by ``--config`` or STRONGROOM_CONFIG, then these defaults."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", env_nested_delimiter="__")

    data_dir: Path = Path("var/data")
    host: str = "127.0.0.1"
    port: int = 8779
    database_url: str | None = None  # default: SQLite file in data_dir
    master_key_file: Path | None = None  # default: data_dir/master.key
    policy_file: Path | None = None
    public_endpoint: str | None = None  # base of links in responses (else the listening address)

    # The HTTP edge: what one client or one project may hold.
    header_timeout: float = 10.0  # seconds a client has to send a request's headers
    body_timeout: float = 30.0  # seconds a client has to send a request's body (then 408)
    access_log: bool = True  # one log line per request
    secure_cookies: bool = False  # dashboard cookies always Secure (behind a TLS proxy)
    max_connections: int = 4096  # open client connections per process; beyond, refused
    blocking_threads: int = 16  # threads for calls that may block (stores, database servers)
    blocking_threads_per_project: int = 4  # of those, at most this many for one project
    blocking_wait_seconds: float = 30.0  # a call waiting longer for a thread is refused (503)

    # Monitoring: Prometheus metrics on their own listener (host: the service's), never on
    # the API port; 0 turns the listener off. /readyz gives each check this long.
    metrics_port: int = Field(default=9779, ge=0, le=65535)
    metrics_host: str | None = None
    # When set, a scrape must send "Authorization: Bearer <it>": any local process reaches
    # the listener, a tenant's managed server among them (docs/monitoring.md).
    metrics_token: SecretStr | None = None
    readiness_timeout: float = Field(default=5.0, gt=0)

    workers: int = 2
    chunk_size: int = 4 * 1024 * 1024
    compression_level: int = 1
    transfer_threads: int = 2

    backup_quota: int = 50
    running_backups_expires_days: int = 3
    backups_page_size: int = 20
    max_page_size: int = 1000
    max_volume_size: int = 10
    max_instances: int = 20
    # Backup schedules: at most this many per project, and a schedule's runs (each a backup)
    # at least this many seconds apart. Below 60, a 6-field cron's seconds field may name
    # several seconds (`* * * * * */2`); at 60 or more it must be one number.
    max_schedules: int = Field(default=100, ge=1)
    schedule_min_interval: int = Field(default=60, ge=1)
    # Seconds a restore drill may take in all (restore and checks) on a shared worker; one
    # that runs out fails, saying so, and its scratch instance is removed.
    drill_timeout: float = Field(default=1800.0, gt=0)
    # Hours a finished job's row is kept (services/job_history.py), then deleted.
    job_history_hours: float = Field(default=24.0, gt=0)
    default_container: str = DEFAULT_CONTAINER
    # The containers a request may name (swift_container of a backup, a strategy, a schedule
    # or a copy): each store creates a container on its first write, in the service's own
    # account. fnmatch patterns, case-sensitive; empty: default_container (and each store's
    # own default) only; ["*"]: any name.
    allowed_containers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # External-instance allow-lists: plain entries serve every project; an entry
    # {host|path = "…", projects = ["…"]} serves only the projects it names.
    sqlite_roots: AllowanceList = Field(default_factory=list)
    postgresql_allowed_hosts: AllowanceList = Field(default_factory=list)
    postgresql_allowed_data_dirs: AllowanceList = Field(default_factory=list)
    mariadb_allowed_hosts: AllowanceList = Field(default_factory=list)
    mariadb_allowed_datadirs: AllowanceList = Field(default_factory=list)
    instance_bind_address: str = "127.0.0.1"
    engine_timeout: float = 6 * 3600
    # PostgreSQL incrementals store a changed page as its XOR with the parent's copy,
    # realigned where the page was pruned (docs/format.md 8.2): about 19 times smaller
    # after a spread update. The backup reads the parent chain back from the store, so
    # "local" (the default) uses deltas when every parent link is in a local store; true
    # also over Swift and S3 (a download of the parent chain per incremental), false never.
    postgresql_page_deltas: bool | Literal["local"] = "local"
    datastores: Annotated[list[Literal["sqlite", "postgresql", "mariadb"]], NoDecode] = [
        "sqlite",
        "postgresql",
        "mariadb",
    ]

    @field_validator(
        "sqlite_roots",
        "postgresql_allowed_hosts",
        "postgresql_allowed_data_dirs",
        "mariadb_allowed_hosts",
        "mariadb_allowed_datadirs",
        "datastores",
        "allowed_containers",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _listed(value)

    @field_validator("postgresql_page_deltas", mode="before")
    @classmethod
    def _local_true_or_false(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        if word == "local":
            return "local"
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f'expected "local", true or false, not {value!r}')

    # Scaled out (`strongroom api` / `strongroom worker`): metadata in PostgreSQL or MariaDB
    # (database_url), jobs over a Celery broker (RabbitMQ).
    broker_url: SecretStr | None = None
    queue_prefix: str = "strongroom"
    host_id: str = "local"
    api_workers: int = 2
    worker_concurrency: int = 2
    heartbeat_seconds: float = 10.0
    # Point-in-time archiving: a batch of the log at least this often (RPO < 60 s).
    pitr_interval_seconds: float = Field(default=10.0, gt=0, le=50)
    # A running backup's bytes done are recorded at most this often (what a watcher sees).
    progress_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    job_lease_seconds: float = 60.0
    redispatch_after_seconds: float = Field(default=30.0, gt=0)
    dispatch_deadline_seconds: float = 600.0
    reaper_interval_seconds: float = 10.0
    # How long an API process waits for the instance's worker to answer a user, database
    # or root call before it answers 503.
    account_call_timeout: float = Field(default=30.0, gt=0)
    # A store's temporary object (a killed writer's partial put) older than this is reported
    # by `check` and removed by `check --fix` and the reaper.
    temporary_object_max_age_seconds: float = Field(default=3600.0, gt=0)

    flavors: list[FlavorSettings] = Field(default_factory=lambda: list(DEFAULT_FLAVORS))
    stores: list[StoreSettings] = Field(default_factory=list)
    default_store: str | None = None
    keystone: KeystoneSettings = Field(default_factory=KeystoneSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("STRONGROOM_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.data_dir = self.data_dir.absolute()
        if not self.stores:
            self.stores = [LocalStoreConfig(name="local")]
        self.stores = [
            store.model_copy(update={"root": self.data_dir / "objects"})
            if isinstance(store, LocalStoreConfig) and store.root is None
            else store
            for store in self.stores
        ]
        names = [s.name for s in self.stores]
        if len(set(names)) != len(names):
            raise ValueError("store names must be unique")
        if self.default_store is None:
            self.default_store = names[0]
        elif self.default_store not in names:
            raise ValueError(f"default_store {self.default_store!r} is not a configured store")
        for allowances in (
            self.sqlite_roots,
            self.postgresql_allowed_data_dirs,
            self.mariadb_allowed_datadirs,
        ):
            for entry in allowances:
                entry.value = str(Path(entry.value).absolute())
        return self

    @property
    def metadata_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'strongroom.db'}"

    @property
    def key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"
