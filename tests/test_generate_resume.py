"""``synthbrain generate`` keeps what it finished when interrupted and resumes on the same command
(issue 34, point 3): a real SIGINT to a real process, then the rerun, against a clean run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthbrain.cli import main
from tests.helpers import subprocess_env, tiny_generator

N, BATCH = 12, 2


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_generator(distribution=True, steps=10).save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


def _command(model: Path, out: Path) -> list[str]:
    return ["generate", "--model", str(model), "-n", str(N), "--batch-size", str(BATCH), "--seed", "5", "--age", "70", "--out", str(out)]


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_interrupted_generate_keeps_its_volumes_and_the_rerun_writes_what_a_clean_run_writes(model, tmp_path, capsys):
    clean = tmp_path / "clean"
    assert main(_command(model, clean)) == 0
    assert not (tmp_path / "clean.partial").exists()

    out = tmp_path / "synth"
    partial = tmp_path / "synth.partial"
    process = subprocess.Popen(
        [sys.executable, "-m", "synthbrain.cli", *_command(model, out)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (partial / "chunk-000001" / "done.json").is_file():  # two batches (4 volumes) finished
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no batch finished in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    message = err.strip().splitlines()[-1]
    done = [p.parent for p in sorted(partial.glob("chunk-*/done.json"))]
    assert 2 <= len(done) < N // BATCH, message  # interrupted mid-run, with what it finished kept
    kept = len(done) * BATCH
    assert message.startswith(f"synthbrain generate: interrupted; the {kept} of {N} volumes finished so far are kept in ")
    assert "synth.partial" in message and f"run the same command again to generate the other {N - kept}" in message
    assert not out.exists()

    # What was kept is readable, and is what the clean run made for those volumes.
    for chunk in done:
        c = int(chunk.name.removeprefix("chunk-"))
        images, labels = np.load(chunk / "images.npy"), np.load(chunk / "labels.npy")
        assert images.shape == (BATCH, 1, 16, 16, 16) and labels.shape == (BATCH, 16, 16, 16)
        for k in range(BATCH):
            sid = f"sub-synth{c * BATCH + k:05d}"
            reference = nib.load(clean / sid / "anat" / f"{sid}_T1w.nii.gz").get_fdata(dtype=np.float32)
            np.testing.assert_array_equal(images[k, 0], reference)

    assert main(_command(model, out)) == 0
    assert f"resuming: {kept} of {N} volumes already in" in capsys.readouterr().err
    assert not partial.exists()
    written, reference = _files(out), _files(clean)
    assert list(written) == list(reference)
    for name, path in written.items():
        if name.endswith(".nii.gz"):  # the gzip header holds a time: compare the images and their headers
            a, b = nib.load(path), nib.load(reference[name])
            np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
            assert a.header.binaryblock == b.header.binaryblock
        else:
            assert path.read_bytes() == reference[name].read_bytes(), name
    assert json.loads((out / "provenance.json").read_text())["qc"] == "measure"


def test_a_leftover_of_other_settings_is_refused_with_what_to_do(model, tmp_path, capsys):
    partial = tmp_path / "synth.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    assert main(_command(model, tmp_path / "synth")) == 2
    assert "is not what an interrupted synthbrain generate leaves; move it away" in capsys.readouterr().err
    (partial / "notes.txt").unlink()
    partial.rmdir()
    command = _command(model, tmp_path / "synth")
    from synthbrain.datasets import Fixed, SyntheticBrainDataset
    from synthbrain.generator import BrainGenerator

    SyntheticBrainDataset(N, Fixed(age=70.0), BrainGenerator.from_pretrained(model), seed=6, device="cpu", chunk_size=BATCH, shards=partial)
    assert main(command) == 2  # the leftover has seed 6, this command seed 5
    err = capsys.readouterr().err
    assert "holds the finished volumes of an interrupted generate with other settings" in err and "differing: ['seed']" in err
    assert "run that command again to finish it, or delete" in err
