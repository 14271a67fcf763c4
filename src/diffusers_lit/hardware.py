"""What this machine's CPU can do, for choices that depend on it: bf16 autocast only where the CPU has bf16
instructions (AVX512-BF16 or AMX-BF16). Elsewhere bf16 is emulated and a training step runs about 15x slower
than in fp32 (seen on an AVX2-only AMD EPYC: 31 s against 1.9 s).

`python -m diffusers_lit.hardware` prints the mixed precision to train with on this CPU ("bf16" or "no"): the
Makefile and the benchmark scripts use it.
"""

from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def cpu_mixed_precision() -> str:
    """ "bf16" where the CPU computes bf16 natively, else "no" (fp32)."""
    return "bf16" if cpu_has_native_bf16() else "no"


if __name__ == "__main__":
    print(cpu_mixed_precision())
