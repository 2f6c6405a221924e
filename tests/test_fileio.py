"""torchssm.fileio: atomic writes replace the file whole or not at all, and leave no temporary file."""

import json
import stat

import pytest

from torchssm.fileio import atomic_write, atomic_write_json, atomic_write_text


def test_text_and_json_written_whole_with_readable_permissions(tmp_path):
    path = tmp_path / "sub" / "notes.txt"
    assert atomic_write_text(path, "héllo\n") == path  # creates the parent folder
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    atomic_write_text(path, "replaced")
    assert path.read_text() == "replaced"

    doc = {"a": [1, 2.5, None], "b": "x"}
    atomic_write_json(tmp_path / "doc.json", doc, indent=2)
    assert json.loads((tmp_path / "doc.json").read_text()) == doc
    assert (tmp_path / "doc.json").read_text() == json.dumps(doc, indent=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json", "sub"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["notes.txt"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    with pytest.raises(TypeError):
        atomic_write_json(path, {"not serialisable": object()})
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
