import pytest
import torch

import avrsp


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg():
    return avrsp.get_config("avrsp_tiny")
