"""One writer per output folder (issue 32, fault 1; fmriprep#3200, #1667): two ``synthbrain generate
--out SAME`` started together must not lose data. The race is run with two real processes; the first
is held inside its save (the window where the old staging clean-up deleted a live writer's folder)
until the second has finished."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from synthbrain import _io
from tests.helpers import subprocess_env, tiny_generator

N = 4
# Writer 1: the real command line, held at its first image file (inside the save, after generating)
# until the test creates GO; HELD tells the test it got there.
HELD_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from synthbrain import _io
    from synthbrain.cli import main

    held, go = Path(sys.argv[1]), Path(sys.argv[2])
    save_nifti = _io.save_nifti

    def held_save(path, *args, **kwargs):
        if not held.exists():
            held.write_text("in the save")
            deadline = time.time() + 120
            while not go.exists() and time.time() < deadline:
                time.sleep(0.02)
        save_nifti(path, *args, **kwargs)

    _io.save_nifti = held_save
    sys.exit(main(sys.argv[3:]))
    """
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_generator(distribution=True, steps=2).save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


def _generate_args(model: Path, out: Path, seed: int, *extra: str) -> list[str]:
    flags = ["--model", str(model), "-n", str(N), "--batch-size", "2", "--seed", str(seed), "--device", "cpu"]
    return ["generate", *flags, "--out", str(out), *extra]


def _start_held(model: Path, out: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    held, go = tmp_path / "held", tmp_path / "go"
    cmd = [sys.executable, "-c", HELD_WRITER, str(held), str(go), *_generate_args(model, out, seed=1)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    deadline = time.time() + 180
    while not held.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert held.exists(), f"writer 1 never reached its save (exit {proc.poll()}): {proc.stderr.read() if proc.poll() is not None else ''}"
    return proc, go


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "synthbrain.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)


def _check_complete(out: Path, seed: int) -> None:
    """A finished dataset: one participants row per volume and per label map, the seeds of one run."""
    from synthbrain.generator.draws import volume_seed

    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert len(table) == len(list(out.glob("sub-*/anat/*_T1w.nii.gz"))) == len(list(out.glob("sub-*/anat/*_dseg.nii.gz"))) == N
    assert table["seed"].tolist() == [volume_seed(seed, i) for i in range(N)]


def test_a_second_generate_into_the_same_folder_is_refused_and_the_first_completes(model, tmp_path):
    out = tmp_path / "synth"
    writer1, go = _start_held(model, out, tmp_path)
    try:
        assert _io.lock_path(out).is_file()  # writer 1 holds the lock while it saves
        second = _run_cli(*_generate_args(model, out, seed=2))
    finally:
        (go).write_text("go")
        _, err1 = writer1.communicate(timeout=300)
    assert second.returncode == 2, second.stderr
    assert "out=" in second.stderr and "is being written by another synthbrain process" in second.stderr
    assert f"pid {writer1.pid}" in second.stderr  # names the live owner
    assert writer1.returncode == 0, err1
    _check_complete(out, seed=1)  # writer 1's dataset, whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging folder, no lock file left


def test_a_killed_writers_leftovers_are_cleaned_and_a_finished_dataset_is_kept(model, tmp_path):
    out = tmp_path / "synth"
    writer1, _ = _start_held(model, out, tmp_path)
    os.kill(writer1.pid, signal.SIGKILL)  # killed inside its save: its lock file and staging folder stay behind
    assert writer1.wait() == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == sorted([_io.lock_path(out).name, *[p.name for p in tmp_path.glob(".tmp-*-synth")]]) and len(left) == 2

    from synthbrain.cli import main, partial_folder

    partial = partial_folder(out)  # writer 1's finished volumes, kept for its command to resume (issue 34)
    assert (partial / "dataset.json").is_file()
    assert main(_generate_args(model, out, seed=2)) == 2  # another command does not mix into them, nor delete them
    assert (partial / "dataset.json").is_file()
    assert main(_generate_args(model, out, seed=1)) == 0  # a dead owner does not block the folder: its command resumes
    _check_complete(out, seed=1)
    assert not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # the dead writer's leftovers are gone

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(_generate_args(model, out, seed=3)) == 2  # a finished dataset is kept without --overwrite ...
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main(_generate_args(model, out, 3, "--overwrite")) == 0  # ... and replaced with it
    _check_complete(out, seed=3)


# ---------------------------------------------------------------------------------------------------
# The lock itself, and every writer holding it


HOLDER = "import sys, time; from synthbrain import _io\nwith _io.folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)"


def _hold(folder: Path):
    """A live other process holding the lock of ``folder``; yields (folder, process)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=subprocess_env())
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


@pytest.fixture
def held_by_another_process(tmp_path):
    yield from _hold(tmp_path / "busy")


@pytest.fixture(scope="module")
def held_for_the_module(tmp_path_factory):
    yield from _hold(tmp_path_factory.mktemp("held") / "busy")


def test_the_lock_names_its_live_owner_and_dies_with_it(held_by_another_process):
    folder, proc = held_by_another_process
    with pytest.raises(_io.FolderInUseError, match=rf"result='.*busy' is being written by another synthbrain process \(pid {proc.pid} on "):
        with _io.folder_lock(folder, argument="result"):
            pass
    proc.kill()  # SIGKILL: no clean-up ran, the lock file stays, but the OS dropped the lock
    proc.wait()
    assert _io.lock_path(folder).is_file()
    with _io.folder_lock(folder):
        with _io.folder_lock(folder):  # re-entrant in the thread holding it
            assert _io.lock_path(folder).is_file()
    assert not _io.lock_path(folder).exists()


def test_another_thread_is_refused_or_waits(tmp_path):
    folder, order = tmp_path / "f", []
    with _io.folder_lock(folder):
        refused = []
        worker = threading.Thread(target=lambda: refused.append(_attempt(folder)))
        worker.start()
        worker.join()
        assert isinstance(refused[0], _io.FolderInUseError)
        waiter = threading.Thread(target=_wait_then_note, args=(folder, order))
        waiter.start()
        time.sleep(0.3)
        order.append("holder")
    waiter.join(timeout=10)
    assert order == ["holder", "waiter"] and not _io.lock_path(folder).exists()


def _wait_then_note(folder, order):
    with _io.folder_lock(folder, wait=True):
        order.append("waiter")


def _attempt(folder):
    try:
        with _io.folder_lock(folder):
            return None
    except _io.FolderInUseError as err:
        return err


def _writers():
    """Every synthbrain function that writes a folder, with arguments that bind (the lock comes first)."""
    from synthbrain.autoencoder.train import train_autoencoder
    from synthbrain.diffusion.latents import cache_latents
    from synthbrain.diffusion.train import train_diffusion
    from synthbrain.evaluation.evaluate import evaluate
    from synthbrain.model_folder import write_model_folder
    from synthbrain.monai_bundle import convert_bundle
    from synthbrain.preprocessing.prepare import prepare_cohort
    from synthbrain.preprocessing.split import split_prepared
    from synthbrain.reader_study.create import create_study

    return {
        "prepare": lambda out: prepare_cohort(None, out),
        "split": lambda out: split_prepared("x", out, {}),
        "train autoencoder": lambda out: train_autoencoder("x", out, None),
        "train diffusion": lambda out: train_diffusion("x", out, None),
        "cache latents": lambda out: cache_latents("x", "x", out),
        "evaluate": lambda out: evaluate(None, "x", out),
        "reader-study create": lambda out: create_study("x", out),
        "convert-monai": lambda out: convert_bundle("x", out),
        "save_pretrained": lambda out: write_model_folder(None, out),
    }


@pytest.mark.parametrize("writer", list(_writers()))
def test_every_writer_refuses_a_folder_another_process_writes(held_for_the_module, writer):
    folder, proc = held_for_the_module
    with pytest.raises(_io.FolderInUseError, match=rf"is being written by another synthbrain process \(pid {proc.pid} "):
        _writers()[writer](folder)


def test_a_shard_chunk_has_one_writer(tmp_path, monkeypatch):
    """A shard store takes many writers (ranks, reruns); each chunk is written by one at a time and
    waited for by the others, so a chunk is generated once."""
    from synthbrain.datasets import Fixed, SyntheticBrainDataset

    generator = tiny_generator(distribution=True, steps=2)
    made = []
    datasets = [SyntheticBrainDataset(2, Fixed(age=50.0), generator, chunk_size=2, device="cpu", shards=tmp_path / "s") for _ in range(2)]
    generate = SyntheticBrainDataset._generate

    def slow(self, indices, *args, **kwargs):
        made.append(threading.get_ident())
        time.sleep(0.5)
        return generate(self, indices, *args, **kwargs)

    monkeypatch.setattr(SyntheticBrainDataset, "_generate", slow)
    threads = [threading.Thread(target=d.pregenerate, kwargs={"progress": False}) for d in datasets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(made) == 1 and (tmp_path / "s" / "chunk-000000" / "done.json").is_file()
    assert not list((tmp_path / "s").rglob(".tmp-*")) and not list(tmp_path.rglob(f"*{_io.LOCK_SUFFIX}"))
