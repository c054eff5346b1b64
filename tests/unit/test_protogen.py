from __future__ import annotations

from pathlib import Path

from meshctl.protogen import stale_files


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_identical_trees_are_fresh(tmp_path: Path) -> None:
    files = {"hvac/a_pb2.py": "x", "hvac/__init__.py": ""}
    assert stale_files(_tree(tmp_path / "want", files), _tree(tmp_path / "have", files)) == []


def test_changed_missing_and_extra_files_are_stale(tmp_path: Path) -> None:
    want = _tree(tmp_path / "want", {"a_pb2.py": "new", "b_pb2.py": "b"})
    have = _tree(tmp_path / "have", {"a_pb2.py": "old", "c_pb2.py": "c"})
    assert sorted(stale_files(want, have)) == ["a_pb2.py", "b_pb2.py", "c_pb2.py"]


def test_bytecode_caches_are_ignored(tmp_path: Path) -> None:
    want = _tree(tmp_path / "want", {"a_pb2.py": "x"})
    have = _tree(tmp_path / "have", {"a_pb2.py": "x", "__pycache__/a.pyc": "junk"})
    assert stale_files(want, have) == []
