"""Dataset registry and fetcher: local file:// and http mirrors built in tmp_path, no internet needed."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from semkit.cli.data import data_group
from semkit.data import registry as reg
from semkit.data.registry import (
    ADAPTERS,
    DATASETS,
    MARKER,
    ChecksumError,
    DatasetSpec,
    FetchError,
    FileSpec,
    UnknownDatasetError,
    fetch,
)
from semkit.errors import InputError

# FIPS 180-2 / RFC 1321 test vectors for the message "abc".
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
ABC_MD5 = "900150983cd24fb0d6963f7d28e17f72"
ZIP_MEMBERS = {"toy/a.txt": b"particle " * 5000, "toy/sub/b.txt": b"substrate\n" * 3000}
OFFLINE = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused at once


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


class Toy:
    """A mirror folder <root>/toyset/{abc.txt, toy.zip} and the spec describing it (URLs point offline)."""

    def __init__(self, root: Path, pin_zip: bool = True):
        self.mirror = root / "mirror"
        (self.mirror / "toyset").mkdir(parents=True)
        self.zip_bytes = _zip_bytes(ZIP_MEMBERS)
        (self.mirror / "toyset" / "abc.txt").write_bytes(b"abc")
        (self.mirror / "toyset" / "toy.zip").write_bytes(self.zip_bytes)
        self.zip_sha256 = hashlib.sha256(self.zip_bytes).hexdigest()
        self.spec = DatasetSpec(
            name="toyset", title="toy", description="toy data", homepage="https://example.org", license="CC0 1.0",
            paper="none", adapter="unlabeled",
            files=(
                FileSpec(url=f"{OFFLINE}/abc.txt", filename="abc.txt", size_bytes=3, sha256=ABC_SHA256),
                FileSpec(url=f"{OFFLINE}/toy.zip", filename="toy.zip", size_bytes=len(self.zip_bytes),
                         sha256=self.zip_sha256 if pin_zip else None, unpack=True),
            ),
        )
        self.registry = {"toyset": self.spec}


@pytest.fixture
def toy(tmp_path) -> Toy:
    return Toy(tmp_path)


def _fetch(toy: Toy, dest: Path, **kw) -> tuple[Path, list[str]]:
    lines: list[str] = []
    kw.setdefault("mirror", str(toy.mirror))
    path = fetch("toyset", dest=dest, registry=toy.registry, progress=False, log=lines.append, **kw)
    return path, lines


# --------------------------------------------------------------------------------------------- fetch from a mirror


def test_fetch_from_file_mirror_verifies_unpacks_and_records(toy, tmp_path):
    out, lines = _fetch(toy, tmp_path / "data")
    assert out == tmp_path / "data" / "toyset"
    assert (out / "abc.txt").read_bytes() == b"abc"
    for name, data in ZIP_MEMBERS.items():
        assert (out / name).read_bytes() == data
    assert not (out / "toy.zip").exists()  # archive removed after a verified unpack
    assert not list(out.glob("*.part"))
    marker = json.loads((out / MARKER).read_text())
    files = {f["filename"]: f for f in marker["files"]}
    assert files["abc.txt"]["sha256"] == ABC_SHA256 and files["abc.txt"]["md5"] == ABC_MD5
    assert files["toy.zip"]["sha256"] == toy.zip_sha256 and files["toy.zip"]["verified"] is True
    assert files["toy.zip"]["url"] == (toy.mirror / "toyset" / "toy.zip").as_uri()
    assert marker["spec"]["license"] == "CC0 1.0" and marker["mirror"] == str(toy.mirror)
    assert any(f"verified abc.txt (sha256 {ABC_SHA256})" in line for line in lines)
    assert reg.is_fetched("toyset", tmp_path / "data", registry=toy.registry)


def test_second_fetch_is_skipped_unless_forced(toy, tmp_path):
    out, _ = _fetch(toy, tmp_path / "data")
    stamp = (out / MARKER).stat().st_mtime_ns
    (toy.mirror / "toyset" / "abc.txt").unlink()  # a second download would now fail
    _, lines = _fetch(toy, tmp_path / "data")
    assert any("already fetched" in line for line in lines)
    assert (out / MARKER).stat().st_mtime_ns == stamp
    (toy.mirror / "toyset" / "abc.txt").write_bytes(b"abc")
    _, lines = _fetch(toy, tmp_path / "data", force=True)
    assert not any("already fetched" in line for line in lines)
    assert (out / "abc.txt").read_bytes() == b"abc"


def test_changed_pin_invalidates_a_finished_fetch(toy, tmp_path):
    _fetch(toy, tmp_path / "data")
    changed = Toy(tmp_path / "other")
    spec = DatasetSpec(**{**changed.spec.__dict__, "files": (FileSpec(url=f"{OFFLINE}/abc.txt", filename="abc.txt",
                                                                      md5=ABC_MD5),)})
    assert not reg.is_fetched("toyset", tmp_path / "data", registry={"toyset": spec})


def test_failed_refetch_leaves_no_finished_marker_and_keeps_verified_archives(toy, tmp_path):
    out, _ = _fetch(toy, tmp_path / "data")
    spec = DatasetSpec(**{**toy.spec.__dict__, "files": toy.spec.files[::-1]})  # archive first, then abc.txt
    (toy.mirror / "toyset" / "abc.txt").unlink()
    with pytest.raises(FetchError, match="HTTP|cannot read the mirror file"):
        fetch("toyset", dest=tmp_path / "data", mirror=str(toy.mirror), registry={"toyset": spec}, force=True,
              progress=False, log=lambda m: None)
    assert not (out / MARKER).exists() and not reg.is_fetched("toyset", tmp_path / "data", registry=toy.registry)
    assert (out / "toy.zip").read_bytes() == toy.zip_bytes  # verified archive kept for the next attempt
    (toy.mirror / "toyset" / "toy.zip").unlink()  # so the next call cannot download it again
    (toy.mirror / "toyset" / "abc.txt").write_bytes(b"abc")
    lines: list[str] = []
    fetch("toyset", dest=tmp_path / "data", mirror=str(toy.mirror), registry={"toyset": spec}, progress=False,
          log=lines.append)
    assert any("toy.zip; verifying it instead of downloading" in line for line in lines)
    assert reg.is_fetched("toyset", tmp_path / "data", registry={"toyset": spec})


def test_mirror_from_environment_variable(toy, tmp_path, monkeypatch):
    monkeypatch.setenv(reg.MIRROR_ENV, toy.mirror.as_uri())
    out, _ = _fetch(toy, tmp_path / "data", mirror=None)
    assert (out / "abc.txt").read_bytes() == b"abc"


def test_unpinned_file_is_fetched_but_reported_unverified_with_its_sha256(tmp_path):
    toy = Toy(tmp_path, pin_zip=False)
    out, lines = _fetch(toy, tmp_path / "data")
    unverified = [line for line in lines if "UNVERIFIED toy.zip" in line]
    assert len(unverified) == 1 and toy.zip_sha256 in unverified[0]
    marker = json.loads((out / MARKER).read_text())
    assert {f["filename"]: f["verified"] for f in marker["files"]} == {"abc.txt": True, "toy.zip": False}


def test_tar_gz_is_unpacked_into_its_sub_folder(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("labels/x.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"12345"))
    (tmp_path / "m" / "tarset").mkdir(parents=True)
    (tmp_path / "m" / "tarset" / "l.tar.gz").write_bytes(buf.getvalue())
    spec = DatasetSpec(name="tarset", title="t", description="d", homepage="https://example.org", license="CC0",
                       paper="p", adapter="unlabeled",
                       files=(FileSpec(url=f"{OFFLINE}/l.tar.gz", filename="l.tar.gz", unpack=True, unpack_to="ann",
                                       sha256=hashlib.sha256(buf.getvalue()).hexdigest()),))
    out = fetch("tarset", dest=tmp_path / "data", mirror=str(tmp_path / "m"), registry={"tarset": spec},
                progress=False, log=lambda m: None)
    assert (out / "ann" / "labels" / "x.txt").read_bytes() == b"12345"


# --------------------------------------------------------------------------------------------- bad downloads


def test_corrupted_file_raises_checksum_error_naming_it_and_removes_the_part(toy, tmp_path):
    (toy.mirror / "toyset" / "abc.txt").write_bytes(b"abd")  # same size, wrong bytes
    with pytest.raises(ChecksumError, match=r"abc\.txt") as err:
        _fetch(toy, tmp_path / "data")
    assert isinstance(err.value, InputError) and err.value.path.endswith("abc.txt.part")
    assert ABC_SHA256 in str(err.value) and hashlib.sha256(b"abd").hexdigest() in str(err.value)
    target = tmp_path / "data" / "toyset"
    assert not (target / "abc.txt.part").exists() and not (target / "abc.txt").exists()
    assert not (target / MARKER).exists()


def test_wrong_size_is_a_checksum_error(toy, tmp_path):
    (toy.mirror / "toyset" / "abc.txt").write_bytes(b"abcd")
    with pytest.raises(ChecksumError, match=r"size 4 bytes differs from the published 3 bytes of abc\.txt"):
        _fetch(toy, tmp_path / "data")
    assert not (tmp_path / "data" / "toyset" / "abc.txt.part").exists()


def test_interrupted_download_resumes_from_the_part_file(toy, tmp_path):
    target = tmp_path / "data" / "toyset"
    target.mkdir(parents=True)
    half = len(toy.zip_bytes) // 2
    (target / "toy.zip.part").write_bytes(toy.zip_bytes[:half])
    out, lines = _fetch(toy, tmp_path / "data")
    assert any(line.startswith("[data] resuming toy.zip at") for line in lines)
    assert any(f"verified toy.zip (sha256 {toy.zip_sha256})" in line for line in lines)
    assert (out / "toy" / "a.txt").read_bytes() == ZIP_MEMBERS["toy/a.txt"]


def test_file_placed_by_hand_is_verified_offline_and_kept(toy, tmp_path):
    target = tmp_path / "data" / "toyset"
    target.mkdir(parents=True)
    (target / "abc.txt").write_bytes(b"abc")
    (target / "toy.zip").write_bytes(toy.zip_bytes)
    out, lines = _fetch(toy, tmp_path / "data", mirror="")  # registered URLs are offline: no download may happen
    assert sum("verifying it instead of downloading" in line for line in lines) == 2
    assert (out / "toy.zip").exists()  # the user's archive is kept
    assert (out / "toy" / "sub" / "b.txt").read_bytes() == ZIP_MEMBERS["toy/sub/b.txt"]


def test_bad_file_placed_by_hand_is_named_and_left_alone(toy, tmp_path):
    target = tmp_path / "data" / "toyset"
    target.mkdir(parents=True)
    (target / "abc.txt").write_bytes(b"xyz")
    with pytest.raises(ChecksumError, match="delete it") as err:
        _fetch(toy, tmp_path / "data", mirror="")
    assert err.value.path == str(target / "abc.txt") and (target / "abc.txt").read_bytes() == b"xyz"


@pytest.mark.parametrize("evil", ["../escaped.txt", "/abs/escaped.txt", "toy/../../escaped.txt"])
def test_zip_slip_archive_is_rejected_before_writing(tmp_path, evil):
    data = _zip_bytes({"toy/ok.txt": b"ok", evil: b"pwned"})
    (tmp_path / "m" / "slip").mkdir(parents=True)
    (tmp_path / "m" / "slip" / "s.zip").write_bytes(data)
    spec = DatasetSpec(name="slip", title="t", description="d", homepage="https://example.org", license="CC0",
                       paper="p", adapter="unlabeled",
                       files=(FileSpec(url=f"{OFFLINE}/s.zip", filename="s.zip", unpack=True,
                                       sha256=hashlib.sha256(data).hexdigest()),))
    with pytest.raises(InputError, match="unsafe archive member") as err:
        fetch("slip", dest=tmp_path / "data", mirror=str(tmp_path / "m"), registry={"slip": spec},
              progress=False, log=lambda m: None)
    assert err.value.path.endswith("s.zip")
    assert not (tmp_path / "data" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "data" / "slip" / "toy" / "ok.txt").exists()  # nothing extracted at all
    assert not (tmp_path / "data" / "slip" / MARKER).exists()


def test_tar_symlink_out_of_the_folder_is_rejected(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(link)
    (tmp_path / "m" / "lnk").mkdir(parents=True)
    (tmp_path / "m" / "lnk" / "l.tar").write_bytes(buf.getvalue())
    spec = DatasetSpec(name="lnk", title="t", description="d", homepage="https://example.org", license="CC0",
                       paper="p", adapter="unlabeled",
                       files=(FileSpec(url=f"{OFFLINE}/l.tar", filename="l.tar", unpack=True),))
    with pytest.raises(InputError, match="links to"):
        fetch("lnk", dest=tmp_path / "data", mirror=str(tmp_path / "m"), registry={"lnk": spec}, progress=False,
              log=lambda m: None)


# --------------------------------------------------------------------------------------------- http and offline


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``root`` with byte ranges; ``cut`` (a list) makes the next response stop half-way."""

    root: Path
    cut: list
    ranges: list

    def do_GET(self):  # noqa: N802 (http.server naming)
        path = self.root / urllib.parse.unquote(self.path.lstrip("/"))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        self.ranges.append(header)
        if header:
            start = int(re.fullmatch(r"bytes=(\d+)-", header).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut:
            self.cut.pop()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_mirror(toy):
    handler = type("H", (_RangeHandler,), {"root": toy.mirror, "cut": [], "ranges": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_http_download_broken_off_keeps_the_part_and_resumes_with_range(toy, tmp_path, http_mirror):
    url, handler = http_mirror
    handler.cut.append(True)  # the first response (abc.txt) stops half-way through
    with pytest.raises(FetchError, match=r"abc\.txt .* broke off") as err:
        _fetch(toy, tmp_path / "data", mirror=url)
    assert "run the fetch again to resume" in str(err.value)
    part = tmp_path / "data" / "toyset" / "abc.txt.part"
    assert part.read_bytes() == b"a"  # first half of 3 bytes kept
    out, lines = _fetch(toy, tmp_path / "data", mirror=url)
    assert handler.ranges[-2:] == ["bytes=1-", None]  # abc.txt resumed at byte 1, toy.zip fetched whole
    assert (out / "abc.txt").read_bytes() == b"abc"
    assert (out / "toy" / "a.txt").read_bytes() == ZIP_MEMBERS["toy/a.txt"]


def test_http_complete_part_gets_416_and_is_verified(toy, tmp_path, http_mirror):
    url, handler = http_mirror
    spec = DatasetSpec(**{**toy.spec.__dict__, "files": (FileSpec(url=f"{OFFLINE}/abc.txt", filename="abc.txt",
                                                                  sha256=ABC_SHA256),)})
    target = tmp_path / "data" / "toyset"
    target.mkdir(parents=True)
    (target / "abc.txt.part").write_bytes(b"abc")  # complete, but the size is not pinned so it asks the server
    out = fetch("toyset", dest=tmp_path / "data", mirror=url, registry={"toyset": spec}, progress=False,
                log=lambda m: None)
    assert handler.ranges == ["bytes=3-"] and (out / "abc.txt").read_bytes() == b"abc"


def test_http_404_is_reported_with_the_url(toy, tmp_path, http_mirror):
    url, _ = http_mirror
    (toy.mirror / "toyset" / "abc.txt").unlink()
    with pytest.raises(FetchError, match="HTTP 404") as err:
        _fetch(toy, tmp_path / "data", mirror=url)
    assert f"{url}/toyset/abc.txt" in str(err.value)
    assert "network is unreachable" not in str(err.value)  # a server answered: not an offline problem


@pytest.mark.parametrize(("base", "reason"), [(OFFLINE, "cannot connect (Connection refused)"),
                                              ("https://semkit-no-such-host.invalid", "cannot be resolved")])
def test_unreachable_url_fails_at_once_with_a_clear_message(toy, tmp_path, base, reason):
    spec = DatasetSpec(**{**toy.spec.__dict__, "files": (FileSpec(url=f"{base}/abc.txt", filename="abc.txt",
                                                                  alt_urls=(f"{base}/alt/abc.txt",)),)})
    start = time.perf_counter()
    with pytest.raises(FetchError) as err:
        fetch("toyset", dest=tmp_path / "data", registry={"toyset": spec}, timeout=3, progress=False,
              log=lambda m: None)
    assert time.perf_counter() - start < 8
    msg = str(err.value)
    assert f"{base}/abc.txt" in msg and f"{base}/alt/abc.txt" in msg  # each URL tried once, all named
    assert msg.count(reason) == 2 and "network is unreachable" in msg
    assert "--mirror" in msg and reg.MIRROR_ENV in msg
    assert str(tmp_path / "data" / "toyset" / "abc.txt") in msg  # where to put a manual download
    assert not (tmp_path / "data" / "toyset" / "abc.txt.part").exists()


def test_dataset_without_download_explains_and_accepts_data_placed_by_hand(tmp_path):
    spec = DATASETS["ssl-sem-unlabeled"]
    with pytest.raises(FetchError, match="no public download") as err:
        fetch(spec.name, dest=tmp_path / "data", progress=False, log=lambda m: None)
    assert spec.manual in str(err.value)
    (tmp_path / "data" / spec.name).mkdir(parents=True)
    (tmp_path / "data" / spec.name / "img.png").write_bytes(b"x")
    fetch(spec.name, dest=tmp_path / "data", progress=False, log=lambda m: None)
    assert reg.read_marker(spec.name, tmp_path / "data")["manual"] is True
    assert reg.is_fetched(spec.name, tmp_path / "data")


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(KeyError) as err:
        reg.get_dataset("bam")
    assert isinstance(err.value, UnknownDatasetError)
    assert str(err.value) == "unknown dataset 'bam'; valid names: " + ", ".join(sorted(DATASETS))
    with pytest.raises(UnknownDatasetError, match="toyset"):
        fetch("nope", registry={"toyset": None}, log=lambda m: None)


def test_format_size():
    assert reg.format_size(None) == "?"
    assert reg.format_size(999) == "999 B"
    assert reg.format_size(1500) == "1.5 kB"
    assert reg.format_size(1_223_165_391) == "1.2 GB"


# --------------------------------------------------------------------------------------------- CLI


def test_cli_list_and_fetch(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "toyset", toy.spec)
    runner = CliRunner()
    dest = str(tmp_path / "data")
    res = runner.invoke(data_group, ["list", "--dest", dest])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("toyset"))
    assert row.split() == ["toyset", "toy", "75.2", "kB", "CC0", "1.0", "no"]  # 3 + 75,218 bytes
    assert re.search(r"^ssl-sem-unlabeled .* manual$", res.output, re.M)

    res = runner.invoke(data_group, ["fetch", "toyset", "--dest", dest, "--mirror", str(toy.mirror),
                                     "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "data" / "toyset" / "toy" / "a.txt").exists()
    assert "'unlabeled' layout" in res.output
    res = runner.invoke(data_group, ["list", "--dest", dest])
    assert next(line for line in res.output.splitlines() if line.startswith("toyset")).endswith("yes")


def test_cli_errors(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "toyset", toy.spec)
    runner = CliRunner()
    res = runner.invoke(data_group, ["fetch", "nope", "--dest", str(tmp_path)])
    assert res.exit_code == 2 and "valid names:" in res.output and "toyset" in res.output
    res = runner.invoke(data_group, ["fetch", "toyset", "--dest", str(tmp_path), "--no-progress"])
    assert res.exit_code == 1 and "network is unreachable" in res.output and f"{OFFLINE}/abc.txt" in res.output


# --------------------------------------------------------------------------------------------- the real registry


def test_toy_sizes_match_the_cli_row(toy):
    assert toy.spec.size_bytes == 3 + len(toy.zip_bytes) == 75_221  # stored zip: 2 headers + data


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_entries_are_well_formed(name):
    spec = DATASETS[name]
    assert spec.name == name and re.fullmatch(r"[a-z0-9][a-z0-9-]*", name)
    assert spec.title and spec.description and spec.paper and spec.license.strip()
    assert spec.adapter in ADAPTERS
    assert spec.homepage.startswith("https://")
    assert "root" in spec.paths
    for part in spec.paths.values():
        assert not part.startswith("/") and ".." not in Path(part).parts
    if not spec.files:
        assert spec.manual, "an entry without files must say how to get the data"
    filenames = [f.filename for f in spec.files]
    assert len(set(filenames)) == len(filenames)
    for f in spec.files:
        for url in (f.url, *f.alt_urls):
            assert url.startswith("https://") and " " not in url
        assert f.filename and "/" not in f.filename and not f.filename.endswith(".part")
        assert f.source, "every file records where its URL (and checksum) came from"
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
        assert f.md5 is None or re.fullmatch(r"[0-9a-f]{32}", f.md5)
        assert f.size_bytes is None or f.size_bytes > 0
        if f.unpack:
            assert f.filename.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def test_registry_covers_the_datasets_of_the_studies():
    assert {"bam-tio2", "uncertainty-sem", "ssl-sem-unlabeled", "nasa-pmm-benchmark", "metaldam",
            "aachen-heerlen", "uhcs"} <= set(DATASETS)
    assert DATASETS["bam-tio2"].doi == "10.5281/zenodo.4563942"
    assert DATASETS["aachen-heerlen"].size_bytes == 3_744_453 + 136_915 + 1_223_165_391


def test_marker_round_trips_through_json(toy, tmp_path):
    out, _ = _fetch(toy, tmp_path / "data")
    marker = reg.read_marker("toyset", tmp_path / "data")
    assert marker["spec"] == json.loads(json.dumps(toy.spec.to_dict()))
    assert functools.reduce(lambda a, f: a + f["size_bytes"], marker["files"], 0) == toy.spec.size_bytes
