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
