"""The suite itself (issue 21): no test leaks global state into the next, and the order
can be reversed or shuffled to prove it."""

from pathlib import Path

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

LEAKY = """
import os, warnings, torch

def test_a_leaks_everything():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    warnings.simplefilter("error")
    os.environ["AVRSP_AUTO_PRECISION"] = "bf16"
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"

def test_b_sees_none_of_it():
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == {threads}
    warnings.warn("harmless", UserWarning)   # an 'error' filter would turn this into a failure
    assert os.environ.get("AVRSP_AUTO_PRECISION") == {precision}
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
"""


def test_global_state_is_restored_after_every_test(pytester, monkeypatch):
    import os

    import torch

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_leak=LEAKY.replace("{threads}", str(torch.get_num_threads()))
                        .replace("{precision}", repr(os.environ.get("AVRSP_AUTO_PRECISION"))))
    # A subprocess: an in-process run would import torch's own test operators twice.
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_the_order_can_be_reversed_or_shuffled(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_order="\n".join(f"def test_{i}():\n    pass\n" for i in range(8)))

    def order(value):
        monkeypatch.setenv("AVRSP_TEST_ORDER", value)
        result = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider")
        return [line.split("::")[1] for line in result.outlines if "::test_" in line]

    plain = [f"test_{i}" for i in range(8)]
    assert order("reverse") == plain[::-1]
    shuffled = order("shuffle:3")
    assert sorted(shuffled) == sorted(plain) and shuffled != plain and shuffled == order("shuffle:3")
