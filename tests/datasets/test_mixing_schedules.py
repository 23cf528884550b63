"""Share schedules of the step or the epoch in MixedBatchSampler (issue 31)."""

import math
import pickle
from fractions import Fraction

import pytest
import torch

from synthbrain.datasets import Fixed, SyntheticBrainDataset, constant_share, cosine_decay, linear_decay, synthetic_then_real
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset
from tests.helpers import tiny_generator

REAL = 10


@pytest.fixture(scope="module")
def mixed():
    generator = tiny_generator(distribution=True, steps=2)
    real = torch.utils.data.TensorDataset(torch.rand(REAL, 1, 16, 16, 16), torch.randint(0, 8, (REAL, 16, 16, 16)))
    return MixedDataset(real, SyntheticBrainDataset(12, Fixed(sex="F"), generator, device="cpu", chunk_size=4))


def _run(sampler, epochs):
    counts = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        counts += [sum(i >= REAL for i in b) for b in sampler]
    return counts


def _due(shares, batch_size):
    """The exact due totals after every batch, rounded half up (the sampler's contract)."""
    totals, due = [], Fraction(0)
    for share in shares:
        due += Fraction(str(share)) if isinstance(share, float) else Fraction(share)
        totals.append(math.floor(due * batch_size + Fraction(1, 2)))
    return totals


@pytest.mark.parametrize("schedule", [linear_decay(0.5, 10), cosine_decay(0.5, 12), synthetic_then_real(5), constant_share(0.3)])
def test_a_step_schedule_is_exact_after_every_batch_across_epochs(mixed, schedule):
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=schedule, num_batches=4, schedule_unit="step", num_epochs=4)
    counts = _run(sampler, 4)
    running = [sum(counts[: t + 1]) for t in range(len(counts))]
    assert running == _due([schedule(t) for t in range(16)], 4)


def test_known_answers_of_the_ready_made_schedules(mixed):
    linear = linear_decay(0.5, 10)
    assert [linear(t) for t in (0, 5, 9, 10, 99)] == [Fraction(1, 2), Fraction(1, 4), Fraction(1, 20), 0, 0]
    assert sum(linear(t) for t in range(10)) * 4 == 11  # 0.5 * (10 + 1) / 2 of every batch of 4
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=linear, num_batches=10, schedule_unit="step")
    # due 2, 3.8, 5.4, 6.8, 8, 9, 9.8, 10.4, 10.8, 11 after each batch, rounded half up
    assert sampler.synthetic_counts() == [2, 2, 1, 2, 1, 1, 1, 0, 1, 0]
    cosine = cosine_decay(1, 4)
    assert [cosine(t) for t in range(5)] == pytest.approx([1, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0])
    first = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=synthetic_then_real(3), num_batches=5, schedule_unit="step")
    assert first.synthetic_counts() == [4, 4, 4, 0, 0]
    assert constant_share(0.25)(7) == Fraction(1, 4) and repr(linear) == "linear_decay(1/2, 10)"


def test_the_epoch_unit_is_unchanged_and_a_share_of_the_epoch_equals_the_same_constant_per_step(mixed):
    by_epoch = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=lambda e: [0.3, 0.7][e], num_batches=3, seed=2)
    by_step = MixedBatchSampler(
        mixed, batch_size=4, synthetic_fraction=lambda t: [0.3, 0.7][t // 3], num_batches=3, seed=2, schedule_unit="step"
    )
    for epoch in range(2):
        by_epoch.set_epoch(epoch)
        by_step.set_epoch(epoch)
        assert list(by_epoch) == list(by_step)


def test_a_step_schedule_is_deterministic_per_seed_and_epoch_and_resumable(mixed):
    def sampler(seed):
        schedule = linear_decay(0.75, 9)
        return MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=schedule, num_batches=3, seed=seed, schedule_unit="step")

    run = sampler(1)
    epochs = []
    for epoch in range(3):
        run.set_epoch(epoch)
        epochs.append(list(run))
    resumed = sampler(1)  # a fresh process resuming at epoch 2
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]
    copy = pickle.loads(pickle.dumps(run))
    assert list(copy) == epochs[2]
    assert list(sampler(2)) != epochs[0]


def test_bad_schedules_are_refused_naming_the_step_and_value(mixed):
    def make(schedule, **kwargs):
        return MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=schedule, num_batches=4, schedule_unit="step", **kwargs)

    with pytest.raises(ValueError, match=r"^synthetic_fraction='half' \(step 0\); allowed: a number in \[0, 1\]$"):
        make(lambda t: "half")
    late = lambda t: 1.5 if t == 9 else 0.5  # noqa: E731
    with pytest.raises(ValueError, match=r"^synthetic_fraction=1.5 \(step 9\); allowed"):
        make(late, num_epochs=3)  # the whole plan is checked before training
    unchecked = make(late)  # without a horizon: refused when its epoch is set, before its batches
    unchecked.set_epoch(1)
    with pytest.raises(ValueError, match=r"\(step 9\)"):
        unchecked.set_epoch(2)
    with pytest.raises(ValueError, match=r"^synthetic_fraction=nan \(step 0\)"):
        make(lambda t: float("nan"))
    with pytest.raises(ValueError, match=r"^synthetic_fraction=None \(epoch 1\)"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=lambda e: None if e else 0.5, num_batches=2, num_epochs=2)
    with pytest.raises(ValueError, match=r"^epoch=3; allowed: 0..2 \(num_epochs=3"):
        make(0.5, num_epochs=3).set_epoch(3)
    with pytest.raises(ValueError, match=r"^schedule_unit='batch'; allowed: 'epoch', 'step'$"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.5, num_batches=2, schedule_unit="batch")
    with pytest.raises(ValueError, match=r"^num_batches=None with schedule_unit='step'"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.5, schedule_unit="step")
    with pytest.raises(ValueError, match=r"^num_epochs=0; allowed"):
        make(0.5, num_epochs=0)
    for build, message in (
        (lambda: linear_decay(1.2, 10), r"^start=1.2; allowed: a number in \[0, 1\]$"),
        (lambda: cosine_decay(0.5, 0), r"^steps=0; allowed: an integer >= 1$"),
        (lambda: synthetic_then_real(-1), r"^steps=-1; allowed: an integer >= 0$"),
        (lambda: constant_share(-0.1), r"^share=-0.1; allowed"),
        (lambda: linear_decay(0.5, 10)(-1), r"^t=-1; allowed"),
    ):
        with pytest.raises(ValueError, match=message):
            build()
