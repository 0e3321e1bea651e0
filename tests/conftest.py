import importlib.util
import os
import random
import warnings
from pathlib import Path

import pytest
import torch

import avrsp

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _isolated_global_state():
    """Every test starts from the same global state and leaves it as it found it: the
    seed, torch's determinism flags and thread count, cuDNN's autotuner, the warning
    filters and the variables that tests set. A training test that turns on
    ``torch.use_deterministic_algorithms`` must not change how every later test runs."""
    torch.manual_seed(0)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    benchmark = torch.backends.cudnn.benchmark
    filters = warnings.filters[:]
    environ = {k: os.environ.get(k) for k in ("CUBLAS_WORKSPACE_CONFIG", "AVRSP_AUTO_PRECISION")}
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = benchmark
    warnings.filters[:] = filters
    for k, v in environ.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def tiny_cfg():
    return avrsp.get_config("avrsp_tiny")


@pytest.fixture(scope="session")
def benchmark_script():
    """Loads ``benchmarks/<name>.py`` (a script, not part of the package) as a module."""
    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


def pytest_collection_modifyitems(config, items):
    """``AVRSP_TEST_ORDER=reverse`` or ``shuffle[:SEED]`` runs the suite in another order:
    no test may depend on what an earlier one left behind."""
    order = os.environ.get("AVRSP_TEST_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle"):
        seed = int(order.partition(":")[2] or 0)
        random.Random(seed).shuffle(items)
    elif order:
        raise pytest.UsageError(f"AVRSP_TEST_ORDER={order!r}: expected reverse or shuffle[:SEED]")
