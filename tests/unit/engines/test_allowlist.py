from pathlib import Path

from strongroom.engines.allowlist import AllowEntry, AllowList


def test_allowlist_plain_entries_serve_every_project() -> None:
    hosts = AllowList.of(["10.0.0.5", "DB.example"])
    assert hosts.allows_host("10.0.0.5", "a")
    assert hosts.allows_host("db.EXAMPLE ", "b")
    assert not hosts.allows_host("10.0.0.6", "a")


def test_allowlist_entry_serves_only_named_projects() -> None:
    hosts = AllowList.of([AllowEntry("10.0.0.5", frozenset({"a"})), "10.0.0.9"])
    assert hosts.allows_host("10.0.0.5", "a")
    assert not hosts.allows_host("10.0.0.5", "b")
    assert hosts.for_project("b") == ("10.0.0.9",)


def test_allowlist_paths_are_resolved_and_contained(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    roots = AllowList.of_paths([AllowEntry(str(link), frozenset({"a"}))])
    assert roots.allows_path(real / "sub", "a")
    assert not roots.allows_path(real / "sub", "b")
    assert not roots.allows_path(tmp_path, "a")
    assert not AllowList() and roots
