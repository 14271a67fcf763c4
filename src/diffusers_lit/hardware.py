"""What this machine's CPU can do, for choices that depend on it: bf16 autocast only where the CPU has bf16
instructions (AVX512-BF16 or AMX-BF16). Elsewhere bf16 is emulated and a training step runs about 15x slower
than in fp32 (seen on an AVX2-only AMD EPYC: 31 s against 1.9 s).

`python -m diffusers_lit.hardware` prints the mixed precision to train with on this CPU ("bf16" or "no"): the
Makefile and the benchmark scripts use it.
"""

from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The instruction sets that decide CPU matmul speed, recorded with every benchmark.
MATMUL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo_field(name: str) -> str | None:
    """The first value of `name` in /proc/cpuinfo (None where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux)."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, e.g. "Intel(R) Xeon(R) Processor"."""
    return _cpuinfo_field("model name")


def cpu_matmul_flags() -> list[str]:
    """Which of `MATMUL_FLAGS` this CPU has."""
    flags = cpu_flags()
    return [flag for flag in MATMUL_FLAGS if flag in flags]


def default_device() -> str:
    """ "cuda" where PyTorch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def cpu_mixed_precision() -> str:
    """ "bf16" where the CPU computes bf16 natively, else "no" (fp32)."""
    return "bf16" if cpu_has_native_bf16() else "no"


if __name__ == "__main__":
    print(cpu_mixed_precision())
