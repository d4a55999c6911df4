from pathlib import Path

import pytest
from pydantic import ValidationError

from strongroom.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("STRONGROOM_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_mode(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.metadata_url == f"sqlite:///{tmp_path / 'strongroom.db'}"
    assert [(st.name, st.kind, st.root) for st in s.stores] == [
        ("local", "local", tmp_path / "objects")
    ]
    assert s.default_store == "local"
    assert s.key_file == tmp_path / "master.key"


def test_precedence_cli_over_env_over_file(tmp_path, monkeypatch):
    config = tmp_path / "strongroom.toml"
    config.write_text(
        'backup_quota = 7\nport = 9000\ndefault_store = "s3"\n'
        '[[stores]]\nname = "s3"\nkind = "s3"\nendpoint_url = "http://127.0.0.1:1"\n'
        'access_key = "a"\nsecret_key = "very-secret"\n'
    )
    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    monkeypatch.setenv("STRONGROOM_BACKUP_QUOTA", "9")
    s = Settings(port=9100)
    assert s.backup_quota == 9
    assert s.port == 9100
    assert s.default_store == "s3"
    assert "very-secret" not in repr(s)


def test_unknown_default_store_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="default_store"):
        Settings(data_dir=tmp_path, default_store="nope")


def test_duplicate_store_names_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="unique"):
        Settings(data_dir=tmp_path, stores=[{"name": "a"}, {"name": "a"}])


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings(data_dir=Path("rel"), sqlite_roots=[Path("roots")])
    assert s.data_dir == tmp_path / "rel"
    assert [a.value for a in s.sqlite_roots] == [str(tmp_path / "roots")]


def test_list_settings_take_comma_separated_env(monkeypatch):
    monkeypatch.setenv("STRONGROOM_POSTGRESQL_ALLOWED_HOSTS", "127.0.0.1, 10.0.0.2")
    monkeypatch.setenv("STRONGROOM_DATASTORES", "sqlite,postgresql")
    s = Settings()
    assert [a.value for a in s.postgresql_allowed_hosts] == ["127.0.0.1", "10.0.0.2"]
    assert s.datastores == ["sqlite", "postgresql"]
    monkeypatch.setenv("STRONGROOM_POSTGRESQL_ALLOWED_HOSTS", '["10.0.0.3"]')
    assert [a.value for a in Settings().postgresql_allowed_hosts] == ["10.0.0.3"]


def test_allowance_entries_name_their_projects(tmp_path):
    s = Settings(
        data_dir=tmp_path,
        sqlite_roots=[str(tmp_path / "all"), {"path": str(tmp_path / "a"), "projects": ["a"]}],
        mariadb_allowed_hosts=[{"host": "10.0.0.5", "projects": ["a", "b"]}],
    )
    assert [(e.value, e.projects) for e in s.sqlite_roots] == [
        (str(tmp_path / "all"), []),
        (str(tmp_path / "a"), ["a"]),
    ]
    assert s.mariadb_allowed_hosts[0].projects == ["a", "b"]


@pytest.mark.parametrize(
    ("given", "meant"),
    [("local", "local"), (" Local ", "local"), ("true", True), ("YES", True), ("0", False)],
)
def test_page_deltas_take_local_or_a_bool_from_the_environment(monkeypatch, given, meant):
    monkeypatch.setenv("STRONGROOM_POSTGRESQL_PAGE_DELTAS", given)
    assert Settings().postgresql_page_deltas == meant


def test_page_deltas_default_to_local_stores_and_refuse_other_words(tmp_path, monkeypatch):
    assert Settings(data_dir=tmp_path).postgresql_page_deltas == "local"
    config = tmp_path / "strongroom.toml"
    config.write_text("postgresql_page_deltas = false\n")
    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    assert Settings().postgresql_page_deltas is False
    with pytest.raises(ValidationError, match='expected "local", true or false'):
        Settings(postgresql_page_deltas="remote")
