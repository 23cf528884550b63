"""synthbrain.seeding, the one owner of seed derivation (issue 33): each function's output pinned for
a fixed input (a change of formula changes what every run draws, and a training run resumed from an
older checkpoint would no longer continue as it began), and no seed arithmetic anywhere else."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from synthbrain import seeding

ROOT = Path(__file__).resolve().parents[1]


def test_volume_seeds_and_their_streams_are_pinned():
    # literal values: a change in how the seeds are derived (or in numpy's seeding) is seen
    assert seeding.volume_seed(7, 3) == 3411976877185804603
    assert seeding.volume_seeds(7, 4)[3] == seeding.volume_seed(7, 3) and seeding.volume_seeds([5, 6], 2) == [5, 6]
    assert seeding.stream(123, seeding.CONDITION).integers(1000, size=3).tolist() == [739, 552, 43]
    assert seeding.torch_stream(123, seeding.SAMPLER).initial_seed() == 2434382007749116978
    assert seeding.appearance_seed(123) == 4999809826441452142
    assert 2**62 <= seeding.appearance_seed(124) < 2**63
    noise = seeding.initial_noise([4], (2, 3))
    assert torch.equal(noise[0], torch.randn(2, 3, generator=torch.Generator().manual_seed(4)))


def test_training_seeds_keep_the_formula_that_checkpoints_hold_the_states_of():
    assert seeding.training_seed(0, 0) == 0
    assert seeding.training_seed(3, 2) == 3002  # seed * 1000 + rank
    assert seeding.training_seed(3, 2, "crops") == 3502  # + 500: the autoencoder's patch corners
    with pytest.raises(ValueError, match=r"^rank=500; allowed: an integer in \[0, 500\)$"):
        seeding.training_seed(0, 500)  # would share the crops stream of rank 0
    with pytest.raises(ValueError, match=r"^stream='patches'; allowed: \['main', 'crops'\]$"):
        seeding.training_seed(0, 0, "patches")
    with pytest.raises(ValueError, match=r"^seed=-1; allowed: an integer >= 0$"):
        seeding.training_seed(-1, 0)


def test_keyed_epoch_and_child_seeds_are_pinned():
    assert seeding.epoch_rng(5, 2).integers(1000, size=4).tolist() == [792, 237, 711, 427]
    assert seeding.keyed_rng(10, 1).integers(1000, size=4).tolist() == [935, 152, 891, 750]
    assert seeding.keyed_rng(5, 2).integers(1000, size=4).tolist() == [792, 237, 711, 427]  # epoch_rng is keyed_rng(seed, epoch)
    assert seeding.child_seed(7, 2) == 1009178997
    assert seeding.child_seed(1, 0, 3) == 1103802525
    assert seeding.child_seed(7, 2) == int(np.random.SeedSequence([7, 2]).generate_state(1)[0])
    assert seeding.itk_seed(0) == 1 and seeding.itk_seed(41) == 42  # ITK's 0 would mean the wall clock
    with pytest.raises(ValueError, match=r"^epoch=-1; allowed: an integer >= 0$"):
        seeding.epoch_rng(0, -1)
    with pytest.raises(ValueError, match=r"^key=1.5; allowed: an integer >= 0$"):
        seeding.child_seed(0, 1.5)
    with pytest.raises(ValueError, match=r"^keys: none given"):
        seeding.keyed_rng()


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def seed_arithmetic(source: str) -> list[str]:
    """The places in ``source`` that derive a seed by hand: ``SeedSequence(...)``, ``spawn_key=``,
    ``default_rng([...])`` of a list, ``manual_seed(a + b)``, and arithmetic on a name containing
    "seed" (``seed * 1000 + rank``, ``seed + 1``). Arithmetic on names that do not say "seed" is not seen."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            called = _name(node.func)
            first = node.args[0] if node.args else None
            bad = (
                called == "SeedSequence"
                or any(k.arg == "spawn_key" for k in node.keywords)
                or (called == "default_rng" and isinstance(first, (ast.List, ast.Tuple)))
                or (called == "manual_seed" and isinstance(first, ast.BinOp))
            )
        else:
            bad = isinstance(node, ast.BinOp) and any("seed" in _name(side).lower() for side in (node.left, node.right))
        if bad:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_sees_each_form_of_seed_arithmetic():
    for code in (
        "g = torch.Generator().manual_seed(settings.seed * 1000 + info.rank)",
        "s = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])",
        "rng = np.random.default_rng([self.seed, self.epoch])",
        "method.SetMetricSamplingPercentage(0.25, seed + 1)",
        "x = np.random.SeedSequence(int(v), spawn_key=(k,))",
        "g = torch.manual_seed(base + rank)",
    ):
        assert seed_arithmetic(code), code
    assert not seed_arithmetic("rng = np.random.default_rng(seed); torch.manual_seed(seed); f(seed=seed)")


def test_no_module_but_seeding_does_seed_arithmetic():
    files = [p for folder in ("synthbrain", "benchmarks", "tools", "examples") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50
    found = {
        str(p.relative_to(ROOT)): hits
        for p in files
        if p != ROOT / "synthbrain" / "seeding.py" and (hits := seed_arithmetic(p.read_text(encoding="utf-8")))
    }
    assert found == {}, f"derive seeds with synthbrain.seeding's functions instead: {found}"
