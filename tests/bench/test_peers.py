"""bench peers: the interleaved timer and the cases at small sizes (outputs checked equal inside)."""

import argparse

import pytest

from torchssm.bench import peers


def test_interleaved_runs_every_function_round_robin():
    calls = []
    med = peers.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4 and set(med) == {"a", "b"} and all(t >= 0 for t in med.values())


def test_cases_small_run_and_name_their_reference():
    fns, ref = peers.case_s5(length=32, width=8)
    assert ref in fns and {"s5", "s5 complex (before)"} <= set(fns)
    fns, ref = peers.case_scan(length=64, dim=4)  # checks jax.lax.scan == linear_scan when jax is installed
    assert set(ref) == set(fns) and set(ref.values()) <= set(fns)
    if "jax.lax.scan fwd" in fns:  # each torchssm function against jax's same work
        assert ref["torchssm fwd"] == "jax.lax.scan fwd" and ref["torchssm fwd+bwd"] == "jax.lax.scan fwd+bwd"
    assert set(peers.interleaved(fns, repeats=1, clock="wall")) == set(fns)
    fns, ref = peers.case_threads(length=16, width=32)
    assert {"s5 2t", "mamba2 1t", "mamba2 3 layers 2t"} <= set(fns)
    assert ref["mamba2 3 layers 2t"] == "mamba2 3 layers 1t"
    with pytest.raises(ValueError, match="clock"):
        peers.interleaved(fns, repeats=1, clock="gpu")


@pytest.mark.parametrize(
    ("case", "peer", "module"),
    [
        ("mamba2", "hf Mamba2Mixer", "transformers"),
        ("mamba", "mambapy MambaBlock", "mambapy"),
        ("s5_pytorch", "s5-pytorch S5", "s5"),
    ],
)
def test_training_peer_cases_same_weights_equal_outputs(case, peer, module):
    """Each peer layer gets torchssm's weights; the case asserts equal outputs before returning."""
    pytest.importorskip(module)
    fns, ref = peers.CASES[case](batch=1, length=32, width=64 if case == "mamba2" else 16)
    assert ref == peer and set(fns) == {"torchssm", peer}
    assert set(peers.interleaved(fns, repeats=1, warmup=0)) == set(fns)
    if case == "mamba2":  # its notices that it falls back to the pure-PyTorch path (the one compared) are off
        from transformers.utils import logging as hf_logging

        assert hf_logging.get_verbosity() == hf_logging.ERROR


def test_missing_peer_is_skipped_with_a_message(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "mambapy.mamba", None)  # import fails as if not installed
    args = argparse.Namespace(cases=["mamba"], threads=[1], repeats=1, json=None, clock="cpu")
    assert peers.run(args) == 0
    assert "mamba   skipped: mambapy is not installed" in capsys.readouterr().out


def test_unknown_case_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown case"):
        peers.run(argparse.Namespace(cases=["nope"], threads=[1], repeats=1, json=None, clock="cpu"))


def test_thread_policy_uses_the_cores_other_processes_leave_idle():
    from torchssm.cpu_threads import auto_cpu_threads

    assert auto_cpu_threads(load=31.7, cores=2) == 1  # the shared machine of BENCHMARKS.md
    assert auto_cpu_threads(load=0.3, cores=2) == 1 and auto_cpu_threads(load=0.0, cores=2) == 2
    assert auto_cpu_threads(load=2.5, cores=16) == 13
    assert 1 <= auto_cpu_threads() <= (__import__("os").cpu_count() or 1)
    with pytest.raises(ValueError, match="cores"):
        auto_cpu_threads(load=1.0, cores=0)
