import pytest
import torch

from synthbrain.autoencoder.model import BrainAutoencoder
from synthbrain.components import save_component
from tests.autoencoder.test_losses import TINY  # the tiny autoencoder of the loss tests
from tests.helpers import make_prepared


@pytest.fixture
def tiny(tmp_path):
    """A prepared cohort of 3 subjects, and the tiny autoencoder (seed 0) with its saved folder."""
    prepared = make_prepared(tmp_path / "prepared", n=3)
    torch.manual_seed(0)
    model = BrainAutoencoder(TINY).eval()
    save_component(model, tmp_path / "autoencoder")
    return prepared, model, tmp_path / "autoencoder"
