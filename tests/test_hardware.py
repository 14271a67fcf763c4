"""bf16 only where the CPU has bf16 instructions."""

import pytest

from diffusers_lit import hardware


@pytest.mark.parametrize(
    "flags, expected",
    [({"avx2", "avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"), ({"avx2"}, "no"), (set(), "no")],
)
def test_mixed_precision_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.cpu_mixed_precision() == expected


def test_this_machines_flags_are_read():
    flags = hardware.cpu_flags()
    assert not flags or "fpu" in flags  # /proc/cpuinfo read where it exists (every x86 CPU lists fpu)


def test_benchmarks_record_the_cpu_model_and_its_instruction_sets(monkeypatch):
    import torch

    from diffusers_lit.benchmarking.measuring import machine_info

    monkeypatch.setattr(hardware, "_cpuinfo_field", {"model name": "Some CPU 9000", "flags": "fpu avx2 fma"}.get)
    info = machine_info(torch.device("cpu"))
    assert info["cpu_model"] == info["device_name"] == "Some CPU 9000"
    assert info["cpu_instruction_sets"] == ["avx2", "fma"]
