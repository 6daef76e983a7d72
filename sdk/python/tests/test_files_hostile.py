"""Downloads from a hostile runtime (issue 14 items 2 and 3, docs/security.md):
links planted by a first download, set-id modes, a FIFO, a 2 TiB sparse file, and
listings no filesystem can hold (sent by an httpx transport that rewrites the
daemon's answers, as a hostile agent could)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Dict, List

import httpx
import pytest

from runta import Runta, RuntaError, Runtime
from runta._flows import unsafe_entry_name


def sh(rt: Runtime, cmd: str) -> None:
    r = rt.exec(cmd)
    assert r.exit_code == 0, (cmd, r.stderr)


def test_entry_names_must_be_one_plain_component() -> None:
    for bad in ["", ".", "..", "../x", "a/b", "/etc", "a\\b", "x\x00y", "a" * 256]:
        assert unsafe_entry_name(bad) is not None, bad
    for good in ["a", ".hidden", "...", "a..b", "ünï"]:
        assert unsafe_entry_name(good) is None, good


def test_setid_bits_dropped_and_planted_links_not_followed(rt: Runtime, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    victim_file = tmp_path / "victim-file"
    victim_file.write_text("mine")
    sh(
        rt,
        "mkdir -p /h/d && printf x > /h/d/suid && chmod 6755 /h/d/suid"
        " && printf y > /h/d/sticky && chmod 1777 /h/d/sticky"
        f" && mkdir /h/d/sub && ln -s {victim} /h/d/sub/into && ln -s {victim_file} /h/d/f",
    )
    out = tmp_path / "out"
    # Symlinks are skipped by this SDK; plant the links a `runta cp` or a user made.
    assert rt.files.download("/h/d", out) == 2
    assert stat.S_IMODE(os.stat(out / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "sticky").st_mode) == 0o777
    os.symlink(victim, out / "sub" / "into")
    os.symlink(victim_file, out / "f")
    sh(
        rt,
        "rm /h/d/sub/into /h/d/f && mkdir /h/d/sub/into"
        " && echo p > /h/d/sub/into/p && echo e > /h/d/f",
    )
    with pytest.raises(RuntaError, match="refusing to write through it"):
        rt.files.download("/h/d", out)
    assert list(victim.iterdir()) == []
    # The file link is replaced by the file, never written through.
    sh(rt, "rm -r /h/d/sub/into")
    rt.files.download("/h/d", out)
    assert victim_file.read_text() == "mine"
    assert (out / "f").is_file() and not (out / "f").is_symlink()


def test_huge_files_and_max_bytes(rt: Runtime, tmp_path: Path) -> None:
    sh(
        rt,
        "mkdir -p /h/many && truncate -s 2T /h/huge"
        " && for i in 1 2 3; do head -c 400000 /dev/urandom > /h/many/f$i; done",
    )
    with pytest.raises(RuntaError, match="2199023255552"):
        rt.files.download("/h/huge", tmp_path / "huge")
    with pytest.raises(RuntaError, match="limited to"):
        rt.files.download("/h/huge", tmp_path / "huge", max_bytes=4 << 40)
    keep = tmp_path / "keep"
    keep.write_text("keep me")
    with pytest.raises(RuntaError, match="max_bytes"):
        rt.files.download("/h/many/f1", keep, max_bytes=1000)
    assert keep.read_text() == "keep me"
    with pytest.raises(RuntaError, match="max_bytes"):
        rt.files.download("/h/many", tmp_path / "many", max_bytes=1_000_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert rt.files.download("/h/many", tmp_path / "many", max_bytes=2_000_000) == 3
    # read(path, max_bytes) as the official client spells it: a prefix from the daemon.
    assert rt.files.read("/h/huge", 16) == b"\0" * 16
    assert rt.files.read("/h/many/f1", max_bytes=0) == b""


def test_fifo_and_devices_are_refused_quickly(rt: Runtime, tmp_path: Path) -> None:
    sh(rt, "mkfifo /h-fifo")
    for p in ["/h-fifo", "/dev/zero"]:
        t0 = time.monotonic()
        with pytest.raises(RuntaError, match="not a regular file"):
            rt.files.download(p, tmp_path / "x")
        with pytest.raises(RuntaError, match="not a regular file"):
            rt.files.read(p)
        assert time.monotonic() - t0 < 20
    assert not (tmp_path / "x").exists()


class Rewriter(httpx.BaseTransport):
    """Forwards to the real daemon, except the listing of /h/x and reads under it."""

    def __init__(self, entries: List[Dict[str, Any]], body: bytes = b"bad") -> None:
        self.inner = httpx.HTTPTransport()
        self.entries = entries
        self.body = body

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.params.get("path", "")
        if request.url.path.endswith("/files/list") and path == "/h/x":
            return httpx.Response(200, content=json.dumps({"data": self.entries}).encode())
        if request.url.path.endswith("/files") and path.startswith("/h/x/"):
            return httpx.Response(200, content=self.body)
        return self.inner.handle_request(request)


@pytest.mark.parametrize(
    "entries,expected",
    [
        ([{"name": "../escape", "type": "file", "size": 1, "mode": 0o644}], "path separator"),
        ([{"name": "..", "type": "file", "size": 1, "mode": 0o644}], "parent or self"),
        ([{"name": "/tmp/runta-py-abs", "type": "file", "size": 1, "mode": 0o644}], "separator"),
        ([{"name": "a\x00b", "type": "file", "size": 1, "mode": 0o644}], "NUL"),
        ([{"name": "", "type": "file", "size": 1, "mode": 0o644}], "empty"),
        (
            [
                {"name": "a", "type": "file", "size": 1, "mode": 0o644},
                {"name": "a", "type": "dir", "size": 0, "mode": 0o755},
            ],
            "twice",
        ),
        ([{"name": "a", "type": "file", "size": 1 << 40, "mode": 0o644}], "max_bytes"),
    ],
)
def test_hostile_listings_write_nothing(
    rt: Runtime,
    tmp_path: Path,
    token: str,
    endpoint: str,
    entries: List[Dict[str, Any]],
    expected: str,
) -> None:
    sh(rt, "mkdir -p /h/x")
    with Runta(token, endpoint, transport=Rewriter(entries)) as c:
        r = c.runtimes.get(rt.id)
        out = tmp_path / "out"
        with pytest.raises(RuntaError, match=expected):
            r.files.download("/h/x", out)
        assert not out.exists()
        assert not (tmp_path / "escape").exists()
        assert not Path("/tmp/runta-py-abs").exists()


def test_a_stream_longer_than_announced_is_cut_at_max_bytes(
    rt: Runtime, tmp_path: Path, token: str, endpoint: str
) -> None:
    sh(rt, "mkdir -p /h/x")
    entries = [{"name": "a", "type": "file", "size": 1, "mode": 0o6755}]
    with Runta(token, endpoint, transport=Rewriter(entries, b"A" * (3 << 20))) as c:
        r = c.runtimes.get(rt.id)
        out = tmp_path / "out"
        with pytest.raises(RuntaError, match="max_bytes"):
            r.files.download("/h/x", out, max_bytes=1 << 20)
        assert list(out.iterdir()) == []
    with Runta(token, endpoint, transport=Rewriter(entries, b"abc")) as c:
        r = c.runtimes.get(rt.id)
        assert r.files.download("/h/x", tmp_path / "ok") == 1
        assert stat.S_IMODE(os.stat(tmp_path / "ok" / "a").st_mode) == 0o755
