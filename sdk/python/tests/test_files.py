"""Files: write/read/list/upload/download (sync client)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runta import ConflictError, InvalidArgumentError, NotFoundError, Runtime


def test_write_read_list(rt: Runtime) -> None:
    rt.files.write("/tmp/a/b/hello.txt", "hello\n")
    assert rt.files.read("/tmp/a/b/hello.txt") == b"hello\n"
    assert rt.files.read_text("/tmp/a/b/hello.txt") == "hello\n"
    assert rt.exec("cat /tmp/a/b/hello.txt").stdout == "hello\n"
    blob = bytes(range(256)) * 4096  # 1 MiB of every byte value
    rt.files.write("/tmp/blob.bin", blob)
    assert rt.files.read("/tmp/blob.bin") == blob
    rt.files.write("/usr/local/bin/tool", "#!/bin/sh\necho tool\n", mode=0o755)
    assert rt.exec("tool").stdout == "tool\n"
    rt.files.write("/tmp/a/b/hello.txt", b"")  # overwrite, empty
    assert rt.files.read("/tmp/a/b/hello.txt") == b""
    entries = {e.name: e for e in rt.files.list("/tmp")}
    assert entries["a"].is_dir and entries["a"].type == "dir"
    assert entries["blob.bin"].is_file and entries["blob.bin"].size == len(blob)
    assert stat.S_IMODE(rt.files.list("/usr/local/bin")[0].mode) == 0o755


def test_file_errors(rt: Runtime) -> None:
    with pytest.raises(NotFoundError):
        rt.files.read("/no/such/file")
    with pytest.raises(InvalidArgumentError) as ei:
        rt.files.read("/tmp")  # a folder
    assert ei.value.field == "path"
    with pytest.raises(InvalidArgumentError):
        rt.files.list("/etc/hostname")  # not a folder
    with pytest.raises(InvalidArgumentError) as ei:
        rt.files.write("relative/path", "x")
    assert ei.value.field == "path"
    with pytest.raises(InvalidArgumentError):
        rt.files.write("/tmp/x", "x", mode=0o17777)
    rt.pause()
    with pytest.raises(ConflictError):
        rt.files.write("/tmp/x", "x")
    rt.resume()


def _tree(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root)) + ("/" if p.is_dir() else "")] = (
            b"" if p.is_dir() else p.read_bytes()
        )
    return out


def test_upload_download_file_and_tree(rt: Runtime, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "top.txt").write_text("top")
    (src / "sub" / "mid.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "sub" / "deeper" / "run.sh").chmod(0o755)
    (src / "with space.txt").write_text("sp")

    assert rt.files.upload(src, "/srv/app") == 4
    assert rt.exec("/srv/app/sub/deeper/run.sh").stdout == "ran\n"
    listing = rt.exec("cd /srv/app && find . | sort").stdout.split()
    assert "./empty" in listing and "./with" in listing  # "with space.txt" split by .split()

    dst = tmp_path / "back"
    assert rt.files.download("/srv/app", dst) == 4
    assert _tree(dst) == _tree(src)
    assert os.stat(dst / "sub" / "deeper" / "run.sh").st_mode & 0o777 == 0o755

    # Single files both ways.
    assert rt.files.upload(src / "top.txt", "/tmp/one.txt") == 1
    assert rt.files.read("/tmp/one.txt") == b"top"
    assert rt.files.download("/tmp/one.txt", tmp_path / "one.txt") == 1
    assert (tmp_path / "one.txt").read_bytes() == b"top"
    with pytest.raises(NotFoundError):
        rt.files.download("/no/such", tmp_path / "none")
    assert not (tmp_path / "none").exists()
