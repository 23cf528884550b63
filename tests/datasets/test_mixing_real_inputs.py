"""Real data from the field in MixedDataset (issue 32, faults 3 and 4): label maps outside the
model's classes, images in scanner units, raw native-space subjects with resample=True, and
covariates written as people write them. Each is refused at construction where the real data is in
memory, and before it is served otherwise, naming the item, what was found and what is allowed."""

import json

import numpy as np
import pytest
import torch
import torchio as tio

from synthbrain.datasets import SyntheticBrainDataset
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset
from synthbrain.preprocessing.prepared import PreparedCohort
from tests.helpers import make_prepared, tiny_generator

SHAPE = (16, 16, 16)


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=2)


@pytest.fixture(scope="module")
def synthetic(generator):
    return SyntheticBrainDataset(4, None, generator, device="cpu", cache_mb=0)


def _subject(generator, image, labels, **covariates):
    affine = generator.image_grid.affine
    return tio.Subject(image=tio.ScalarImage(tensor=image, affine=affine), labels=tio.LabelMap(tensor=labels, affine=affine), **covariates)


def _fine_labels():
    """A label map with FreeSurfer/ASEG-like values {2, 3, 4, 41, 42, 43} (MASILab/3DUX-Net#48)."""
    labels = torch.zeros(SHAPE, dtype=torch.long)
    for k, value in enumerate((2, 3, 4, 41, 42, 43)):
        labels[2 + 2 * k : 4 + 2 * k, 4:12, 4:12] = value
    return labels


def test_real_label_values_outside_the_models_classes_are_refused_naming_the_item(generator, synthetic):
    good = torch.randint(0, 8, SHAPE)
    image = torch.rand(1, *SHAPE)
    # in memory (tensors): every item is checked at construction, the bad one is the third
    labels = torch.stack([good, good, _fine_labels()])
    with pytest.raises(ValueError) as refused:
        MixedDataset((torch.rand(3, 1, *SHAPE), labels), synthetic)
    message = str(refused.value)
    assert message.startswith("real[2] (2): label values [41, 42, 43] are not classes of the model; allowed: 0..7 (background, ventricles,")
    assert "synthbrain prepare" in message and "label scheme" in message
    # a lazily read dataset (torchio): the first item is checked at construction, the others before they are served
    lazy = tio.SubjectsDataset([_subject(generator, image, good[None]), _subject(generator, image, _fine_labels()[None])])
    mixed = MixedDataset(lazy, synthetic)
    assert mixed[0]["label"].max() < 8
    with pytest.raises(ValueError, match=r"^real\[1\] \(1\): label values \[41, 42, 43\] are not classes of the model"):
        mixed[1]
    with pytest.raises(ValueError, match=r"^real\[1\] \(1\): label values \[41, 42, 43\]"):
        MixedDataset(lazy, synthetic).check_all()  # every item read and checked now, on request
    with pytest.raises(ValueError, match=r"^real\[0\] \(0\): label values \[-1\] are not classes of the model"):
        MixedDataset([(image, torch.full(SHAPE, -1))], synthetic)
    # class fractions with another number of classes than the model's: which class is which is unknown
    two = torch.stack([torch.ones(SHAPE), torch.zeros(SHAPE)])
    with pytest.raises(ValueError, match=r"^real\[0\]: a label map of 2 class channels \(class fractions\); the model has 8 classes"):
        MixedDataset([(image, two)], synthetic)


def test_a_prepared_cohort_with_other_classes_is_refused_at_construction(synthetic, tmp_path):
    """Labels 0..7 that mean other classes (MONAI#5881): a prepared cohort's label scheme names its classes."""
    root = make_prepared(tmp_path / "prepared", n=2)
    scheme = json.loads((root / "label_scheme.json").read_text())
    scheme["classes"][1]["name"], scheme["classes"][2]["name"] = scheme["classes"][2]["name"], scheme["classes"][1]["name"]
    (root / "label_scheme.json").write_text(json.dumps(scheme))
    with pytest.raises(ValueError, match=r"^real: a prepared cohort whose label classes \['background', 'csf', 'ventricles',"):
        MixedDataset(PreparedCohort.load(root), synthetic)


def test_real_images_in_scanner_units_are_refused(synthetic):
    labels = torch.randint(0, 8, SHAPE)
    scanner = torch.rand(1, *SHAPE) * 1000
    images = torch.stack([torch.rand(1, *SHAPE), scanner])
    with pytest.raises(ValueError) as refused:
        MixedDataset((images, torch.stack([labels, labels])), synthetic)
    message = str(refused.value)
    low, high = scanner.min().item(), scanner.max().item()
    assert message.startswith(f"real[1] (1): image intensities in [{low:.4g}, {high:.4g}]; allowed: [0, 1]")
    assert "synthbrain prepare" in message
    nan = torch.rand(1, *SHAPE)
    nan[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^real\[0\] \(0\): image has 1 NaN/Inf voxels"):
        MixedDataset([(nan, labels)], synthetic)
    # the synthetic range itself passes, to the last bit
    edge = torch.zeros(1, *SHAPE)
    edge[0, 0, 0, 0] = 1.0
    assert torch.equal(MixedDataset([(edge, labels)], synthetic)[0]["image"], edge)


def test_a_raw_native_space_subject_with_resample_is_refused_pointing_to_prepare(generator, synthetic):
    """As a new user tried it: a raw IXI-like subject (1 mm native grid, skull on, intensities up to
    2966, 149 DLMUSE label values), resample=True."""
    rng = np.random.default_rng(0)
    shape = (48, 56, 48)
    native = np.diag([1.0, 1.0, 1.0, 1.0])
    native[:3, 3] = [-20.0, -30.0, -20.0]
    image = torch.from_numpy(rng.uniform(0, 2966, (1, *shape)).astype(np.float32))
    image[0, 0, 0, 0] = 2966.0
    values = np.array([0, *range(4, 300, 2)][:149])
    labels = torch.from_numpy(values[rng.integers(0, 149, (1, *shape))])
    subject = tio.Subject(image=tio.ScalarImage(tensor=image, affine=native), labels=tio.LabelMap(tensor=labels, affine=native))
    raw = tio.SubjectsDataset([subject])
    with pytest.raises(ValueError) as refused:
        MixedDataset(raw, synthetic, resample=True)
    message = str(refused.value)
    assert message.startswith("real[0] (0): image intensities in [") and ", 2966]; allowed: [0, 1], the range of the synthetic" in message
    assert "(resample=True resamples onto the grid; it does not register or normalise)" in message and "synthbrain prepare" in message
    scaled = tio.Subject(image=tio.ScalarImage(tensor=image / 2966, affine=native), labels=tio.LabelMap(tensor=labels, affine=native))
    with pytest.raises(ValueError) as refused:
        MixedDataset(tio.SubjectsDataset([scaled]), synthetic, resample=True)  # intensities scaled, labels still DLMUSE's
    message = str(refused.value)
    assert message.startswith("real[0] (0): label values [8, 10, 12, 14, 16, 18, 20, 22, 24, 26] ... are not classes of the model")
    assert "(146 values outside); allowed: 0..7" in message  # 0, 4 and 6 of the 149 are indices, but not these classes
    assert "(resample=True does not map labels)" in message and "synthbrain prepare" in message


def test_real_covariates_go_through_the_models_schema(generator, synthetic):
    """easystats/report#438: one batch held sex ['female', 'male', 'M', 'M'] and ages as text."""
    image, labels = torch.rand(1, *SHAPE), torch.randint(0, 8, (1, *SHAPE))
    subjects = tio.SubjectsDataset(
        [
            _subject(generator, image, labels, sex="female", age="70"),
            _subject(generator, image, labels, sex="male", age=" 41.5 "),
            _subject(generator, image, labels, sex=" m ", age=np.float32(30)),
            _subject(generator, image, labels, sex="n/a", site="A"),  # missing values, and a key the model does not know
        ]
    )
    mixed = MixedDataset(subjects, synthetic)
    batch = next(iter(torch.utils.data.DataLoader(mixed, batch_sampler=[[0, 1, 2, 3, 4]])))
    sexes = batch["covariates"]["sex"]
    assert sexes[:4] == ["F", "M", "M", "n/a"] and sexes[4] in ("F", "M")
    ages = batch["covariates"]["age"]
    assert ages.dtype == torch.float64 and ages[:3].tolist() == [70.0, 41.5, 30.0] and torch.isnan(ages[3])
    assert set(mixed[3]["covariates"]) == set(generator.schema.names)
    # values no spelling of the schema accepts are refused at construction (the covariates are read without the images)
    for bad, covariate, value in (({"sex": "X"}, "sex", "'X'"), ({"sex": 2}, "sex", "2"), ({"age": "seventy"}, "age", "'seventy'")):
        many = tio.SubjectsDataset([_subject(generator, image, labels), _subject(generator, image, labels, **bad)])
        with pytest.raises(ValueError, match=rf"^real\[1\] \(1\): covariate '{covariate}': invalid values \[{value}\]; allowed: "):
            MixedDataset(many, synthetic)


def test_a_prepared_cohorts_covariates_are_parsed_and_checked(synthetic, tmp_path):
    import pandas as pd

    root = make_prepared(tmp_path / "prepared", n=2)
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    table["sex"] = ["female", "MALE"]
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    mixed = MixedDataset(PreparedCohort.load(root), synthetic)
    assert [mixed[i]["covariates"]["sex"] for i in range(2)] == ["F", "M"]
    sampler = MixedBatchSampler(mixed, batch_size=3, synthetic_fraction=1 / 3, num_batches=1)
    batch = next(iter(torch.utils.data.DataLoader(mixed, batch_sampler=sampler)))
    assert batch["covariates"]["age"].dtype == torch.float64
    table["sex"] = ["female", "unknown"]
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"^real\[1\] \(p01\): covariate 'sex': invalid values \['unknown'\]"):
        MixedDataset(PreparedCohort.load(root), synthetic)
