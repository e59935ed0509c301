"""data/download.py against a local HTTP mirror on 127.0.0.1 (nothing is fetched from the internet)."""

import hashlib
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data.download import DATASETS, download
from utils.errors import UserError
from utils.paths import REPO_ROOT


class Mirror:
    """Serves files under `root` with HTTP Range support; can cut a file's first response short."""

    def __init__(self, root: Path):
        self.root, self.log, self.cut = root, [], {}  # cut: path -> bytes to send before dropping
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rel = self.path.lstrip("/")
                mirror.log.append((rel, self.headers.get("Range")))
                path = mirror.root / rel
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = int(self.headers["Range"][6:].split("-")[0]) if self.headers.get("Range") else 0
                if start >= len(data) and start:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                limit = mirror.cut.pop(rel, None)  # only the first request is cut
                self.wfile.write(data[start : start + limit] if limit is not None else data[start:])

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror_of():
    mirrors = []

    def make(root):
        mirrors.append(Mirror(root))
        return mirrors[-1]

    yield make
    for m in mirrors:
        m.close()


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_resumes_with_range_and_verifies_real_checksums(data_root, mirror_of, tmp_path):
    mirror = mirror_of(data_root)  # the shared data root, served like the official files
    mirror.cut["ud_ewt/en_ewt-ud-train.conllu"] = 4_000_000  # the connection drops after 4 MB
    part = tmp_path / "ud_ewt" / "en_ewt-ud-dev.conllu.part"  # and a run before this one stopped at 1 MB
    part.parent.mkdir(parents=True)
    part.write_bytes((data_root / "ud_ewt" / "en_ewt-ud-dev.conllu").read_bytes()[:1_000_000])
    paths = download("ud_ewt", tmp_path, base_url=mirror.url)
    assert len(paths) == 6
    for remote in DATASETS["ud_ewt"]:
        assert sha(tmp_path / remote.path) == remote.sha256 == sha(data_root / remote.path)
    assert ("ud_ewt/en_ewt-ud-train.conllu", "bytes=4000000-") in mirror.log
    assert ("ud_ewt/en_ewt-ud-dev.conllu", "bytes=1000000-") in mirror.log
    assert not list(tmp_path.rglob("*.part"))
    # verified files are not fetched again
    mirror.log.clear()
    download("ud_ewt", tmp_path, base_url=mirror.url)
    assert mirror.log == []


def test_checksum_mismatch_and_missing_file_are_one_line_errors(data_root, mirror_of, tmp_path):
    served = tmp_path / "mirror"
    (served / "squad").mkdir(parents=True)
    (served / "squad" / "train-v1.1.json").write_text('{"data": [], "version": "1.1"}')
    mirror = mirror_of(served)
    out = tmp_path / "out"
    script = REPO_ROOT / "data" / "download.py"
    args = [sys.executable, script, "--dataset", "squad", "--base_url", mirror.url, "--output_dir", out]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "sha256" in proc.stderr and "train-v1.1.json" in proc.stderr
    assert not list(out.rglob("*.json")) and not list(out.rglob("*.part"))
    (served / "squad" / "train-v1.1.json").unlink()
    with pytest.raises(UserError, match="404"):
        download("squad", out, base_url=mirror.url)


def test_archives_are_extracted_into_the_data_root_layout(data_root, mirror_of, tmp_path):
    served = tmp_path / "mirror"
    (served / "sst2").mkdir(parents=True)
    with zipfile.ZipFile(served / "sst2" / "SST-2.zip", "w") as zf:
        for name in ("train.tsv", "dev.tsv", "test.tsv"):
            zf.write(data_root / "sst2" / name, f"SST-2/{name}")
        zf.writestr("SST-2/original/README.txt", "not extracted")
    (served / "corpus" / "babylm").mkdir(parents=True)
    with zipfile.ZipFile(served / "corpus" / "babylm" / "babylm_data.zip", "w") as zf:
        for split in ("10M", "100M", "dev", "test"):
            zf.writestr(f"babylm_data/babylm_{split}/aochildes.{split.lower()}", f"{split} text\n")
    mirror = mirror_of(served)
    out = tmp_path / "out"
    download("sst2", out, base_url=mirror.url)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert sha(out / "sst2" / name) == sha(data_root / "sst2" / name)
    assert not (out / "sst2" / "README.txt").exists()
    download("babylm_10m", out, base_url=mirror.url)
    assert (out / "corpus/babylm/10M/aochildes.10m").read_text() == "10M text\n"
    assert (out / "corpus/babylm/dev/aochildes.dev").read_text() == "dev text\n"
    assert not (out / "corpus/babylm/100M").exists()


def test_gutenberg_corpus_from_a_mirror_with_real_checksums(data_root, mirror_of, tmp_path):
    remotes = DATASETS["gutenberg"]
    assert len(remotes) == 87 and all(r.sha256 and r.mirrors for r in remotes)
    # every book of the data root, at its data-root path, with the manifest's checksum
    staged = sorted((data_root / "corpus" / "gutenberg").rglob("*.txt"))
    assert sorted(data_root / r.path for r in remotes) == staged
    mirror = mirror_of(data_root)
    paths = download("gutenberg", tmp_path, base_url=mirror.url)
    assert len(paths) == 87
    for remote in remotes[:5] + remotes[-3:]:
        assert sha(tmp_path / remote.path) == remote.sha256 == sha(data_root / remote.path)
    assert "Gutenberg_Text/" in remotes[0].url and "%20" in remotes[0].url  # the repo's paths, quoted


def test_a_failing_address_falls_back_to_the_mirror(data_root, mirror_of, tmp_path, monkeypatch):
    from data import download as dl

    mirror = mirror_of(data_root)
    book = DATASETS["gutenberg"][0]
    remote = dl.Remote(
        f"{mirror.url}/missing/{book.path}", book.path, book.sha256, mirrors=(f"{mirror.url}/{book.path}",)
    )
    monkeypatch.setitem(dl.DATASETS, "one_book", [remote])
    assert download("one_book", tmp_path) == [tmp_path / book.path]
    assert sha(tmp_path / book.path) == book.sha256
    assert [p for p, _ in mirror.log] == [f"missing/{book.path}", book.path]
