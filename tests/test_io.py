"""Atomic writes: a directory replaced in place survives a crash at any point."""

import json
import os

import pytest

from sutra_testing import run_sutra
from sutra.errors import SutraError
from sutra.io import REPLACED_SUFFIX, atomic_directory, atomic_open, atomic_write_text


def test_a_crash_between_the_two_renames_of_a_replacement_is_undone(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v1")
    os.replace(target, tmp_path / f".ckpt{REPLACED_SUFFIX}")  # as a crash after the first rename leaves it
    with pytest.raises(RuntimeError):
        with atomic_directory(target):
            raise RuntimeError("the new write fails too")
    assert (target / "weights").read_text() == "v1", "the old directory is put back"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_users_own_backup_beside_the_output_is_left_alone(tmp_path):
    """`.NAME.old` is a common name for one's own backup; only Sutra's own set-aside copy is restored or removed."""
    backup = tmp_path / ".ckpt.old"
    backup.mkdir()
    (backup / "notes.txt").write_text("mine")
    for version in ("v1", "v2"):  # a new directory, then a replacement
        with atomic_directory(tmp_path / "ckpt") as tmp:
            (tmp / "weights").write_text(version)
    assert (backup / "notes.txt").read_text() == "mine" and (tmp_path / "ckpt" / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt.old", "ckpt"]


def test_a_streamed_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out.jsonl"
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("first\n")
        assert not path.exists()  # nobody sees a half-written file
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write("second, cut short")
            raise RuntimeError("interrupted")
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["out.jsonl"]


def test_a_written_directory_has_ordinary_permissions(tmp_path):
    """A published checkpoint must be readable by others: safetensors writes its file 0600."""
    import torch
    from safetensors.torch import save_file

    mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "model") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
    finally:
        os.umask(mask)
    assert oct((tmp_path / "model").stat().st_mode & 0o777) == "0o755"
    assert oct((tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777) == "0o644"


def test_an_output_of_the_wrong_kind_or_under_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    with pytest.raises(SutraError, match=r"afile/out.json: cannot be written: .*afile is a file, not a directory"):
        atomic_write_text(tmp_path / "afile" / "out.json", "x")
    with pytest.raises(SutraError, match=r"adir: is a directory; give a file path to write"):
        atomic_write_text(tmp_path / "adir", "x")
    with pytest.raises(SutraError, match=r"afile: is a file; give a directory path to write"):
        with atomic_directory(tmp_path / "afile"):
            pass
    assert (tmp_path / "afile").read_text() == "keep" and not list((tmp_path / "adir").iterdir())
    # `sutra eval` checks its --out before evaluating, so no result is computed only to be lost
    result = run_sutra("eval", "smollm2-135m-instruct", "--perplexity", str(tmp_path), "--out", str(tmp_path / "afile" / "r.json"))
    assert result.returncode == 2 and "afile is a file, not a directory" in result.stderr and "Traceback" not in result.stderr


def test_a_dangling_link_as_the_output_is_one_clear_error(tmp_path):
    """`data prepare --out LINK` to a target not made yet: a FileExistsError traceback from mkdir."""
    (tmp_path / "link").symlink_to(tmp_path / "not-yet")
    (tmp_path / "corpus.jsonl").write_text('{"text": "a document"}\n')
    result = run_sutra("data", "prepare", str(tmp_path / "corpus.jsonl"), "--out", str(tmp_path / "link"))
    assert result.returncode == 2 and result.stderr == (
        f"sutra: error: {tmp_path / 'link'}: a link to {tmp_path / 'not-yet'}, which does not exist; create that, or give another path to write\n")
    with pytest.raises(SutraError, match="which does not exist"):  # a file output: writing would replace the link
        atomic_write_text(tmp_path / "link", "x")
    assert (tmp_path / "link").is_symlink() and not (tmp_path / "not-yet").exists()


def test_a_full_disk_is_one_line_naming_the_output_for_every_writer(tmp_path, tokenizer):
    """Files capped at 4 KB (RLIMIT_FSIZE, as on a nearly full disk; Python ignores SIGXFSZ, so the
    write fails with EFBIG): the weights' write in safetensors and a file written through atomic_open
    both end in one line naming what could not be written, and leave no output."""
    import resource
    import subprocess
    import sys

    from sutra.model.llama import Llama
    from sutra.model.config import ModelConfig
    from sutra.model.checkpoint import save_checkpoint
    from sutra_testing import REPO

    checkpoint = save_checkpoint(tmp_path / "ckpt", Llama(ModelConfig(64, 96, 1, 4, 2, max_seq_len=64)), tokenizer)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 5.0 - i / 10, "lr": 1e-3}) + "\n" for i in range(1, 20)))

    def capped(*args):
        return subprocess.run([sys.executable, "-m", "sutra", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))

    exported = capped("export", str(checkpoint), str(tmp_path / "hf"))
    assert exported.returncode == 2 and "Traceback" not in exported.stderr, exported.stderr[-2000:]
    assert f"sutra: error: could not write {tmp_path / 'hf'} (File too large); make room there or write somewhere else" in exported.stderr
    assert not (tmp_path / "hf").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".hf")]
    plotted = capped("plot", str(run), "--out", str(tmp_path / "curves.png"))  # a PNG of ~40 KB, streamed through atomic_open
    assert plotted.returncode == 2 and "Traceback" not in plotted.stderr, plotted.stderr[-2000:]
    assert f"could not write {tmp_path / 'curves.png'} (File too large)" in plotted.stderr
    assert not (tmp_path / "curves.png").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".curves")]


def test_a_killed_writes_leftovers_go_with_the_next_write_and_a_live_ones_stay(tmp_path):
    """A SIGKILLed export or import left its temporary directory (as large as the model) beside
    the output, and each kill added one that nothing removed."""
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    killed = tmp_path / f".hf.{int(ended.stdout)}.k1ll3d_x.tmp"  # (a pid so soon reused is all but impossible)
    in_progress = tmp_path / f".hf.{os.getpid()}.l1ve_xyz.tmp"  # this process's: a write still under way
    another_output = tmp_path / f".hf.2.{int(ended.stdout)}.abcdefgh.tmp"  # the temporary of an output named hf.2
    for leftover in (killed, in_progress, another_output):
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"partial")
    with atomic_directory(tmp_path / "hf") as tmp:
        (tmp / "config.json").write_text("{}")
    assert not killed.exists() and in_progress.is_dir() and another_output.is_dir()
    assert (tmp_path / "hf" / "config.json").is_file()


def test_a_place_the_filesystem_refuses_is_one_error(tmp_path):
    """Permission bits that allow a write the filesystem refuses (/proc, /sys as root) gave a traceback."""
    with pytest.raises(SutraError, match=r"^/proc/sutra-out: cannot be written \(.+\); give another path to write$"):
        with atomic_directory("/proc/sutra-out"):
            pass
