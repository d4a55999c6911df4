import os
from pathlib import Path

import pytest

from strongroom.engines import beneath


@pytest.fixture(params=["openat2", "stepwise"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stepwise":
        monkeypatch.setattr(beneath, "_have_openat2", False)
    return str(request.param)


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("inside")
    (tmp_path / "secret").write_text("outside")
    (root / "link").symlink_to(tmp_path)
    (root / "sub" / "flink").symlink_to(tmp_path / "secret")
    os.mkfifo(root / "fifo")
    return root


def test_beneath_opens_plain_names(tmp_path: Path, mode: str) -> None:
    root = _tree(tmp_path)
    with beneath.directory(root) as dfd:
        fd, st = beneath.open_regular(dfd, "sub/f")
        try:
            assert os.read(fd, 100) == b"inside"
            assert st.st_size == 6
        finally:
            os.close(fd)


@pytest.mark.parametrize(
    "name", ["link/secret", "sub/flink", "../secret", str(Path("/etc/passwd"))]
)
def test_beneath_refuses_links_dotdot_and_absolute(tmp_path: Path, mode: str, name: str) -> None:
    root = _tree(tmp_path)
    with beneath.directory(root) as dfd, pytest.raises(beneath.EscapeError):
        beneath.open_beneath(dfd, name)


def test_beneath_refuses_non_regular_without_blocking(tmp_path: Path, mode: str) -> None:
    root = _tree(tmp_path)
    with beneath.directory(root) as dfd, pytest.raises(beneath.EscapeError, match="regular"):
        beneath.open_regular(dfd, "fifo")


def test_beneath_directory_itself_must_not_be_a_link(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    with pytest.raises(OSError):
        beneath.open_dir(root / "link")
