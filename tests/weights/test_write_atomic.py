"""write_atomic: the final file has the mode of any new file, and an interrupted write leaves the
previous file as it was and no temporary file behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from transeg.weights.files import write_atomic


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_final_mode_is_0666_less_the_umask(tmp_path, umask_027):
    path = tmp_path / "out.json"
    write_atomic(path, lambda tmp: Path(tmp).write_text("{}"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.umask(0o027) == 0o027  # the umask is left as it was


def test_default_umask_gives_0644(tmp_path):
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.png", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o644


def test_temporary_file_keeps_the_suffix(tmp_path):
    seen = []
    write_atomic(tmp_path / "a.png", lambda tmp: (seen.append(Path(tmp)), Path(tmp).write_bytes(b"x")))
    assert seen[0].suffix == ".png" and seen[0].name.startswith(".a.png.")


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def half_then_interrupt(tmp: str) -> None:
        Path(tmp).write_text("ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_interrupt)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
