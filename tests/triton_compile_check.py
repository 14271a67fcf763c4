"""Compile both linear-attention kernels for NVIDIA GPUs without one; print each one's resources as JSON.

Run without TRITON_INTERPRET (test_linear_attention.py runs it in a process of its own). Prints
{"<kernel> <dtype> sm_<capability>": {"REG": ..., "STACK": ..., "LOCAL": ..., ...} or null without cuobjdump}.
"""

import json
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from diffusers_lit.models import linear_attention_triton as kernels


def resources(cubin: bytes) -> dict[str, int] | None:
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return None
    path = Path(tempfile.mkdtemp()) / "kernel.cubin"
    path.write_bytes(cubin)
    usage = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=True).stdout
    return {key: int(value) for key, value in re.findall(r"(\w+):(\d+)", usage.split("Function", 1)[1])}


def main() -> None:
    results = {}
    torch_dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    for dtype, capability in (("bf16", 90), ("fp16", 80), ("fp32", 90)):
        exact, split = kernels.dot_precisions(torch_dtypes[dtype])
        blocks = {"BLOCK_N": kernels.BLOCK_TOKENS, "BLOCK_D": kernels.BLOCK_DIM}
        tensor, fp32 = f"*{dtype}", "*fp32"
        state = dict(
            k_ptr=tensor,
            v_ptr=tensor,
            state_ptr=fp32,
            norm_ptr=fp32,
            tokens="i32",
            dim="i32",
            head_dim="i32",
            inv_tokens="fp32",
        )
        output = dict(
            q_ptr=tensor,
            v_ptr=tensor,
            state_ptr=fp32,
            norm_ptr=fp32,
            weight_ptr=tensor,
            bias_ptr=tensor,
            out_ptr=tensor,
            tokens="i32",
            dim="i32",
            head_dim="i32",
            height="i32",
            width="i32",
            eps="fp32",
        )
        for name, fn, args, constants in (
            ("state", kernels._state_kernel, state, {"PRECISION": exact, **blocks}),
            ("output", kernels._output_kernel, output, {"KERNEL": 5, "HAS_BIAS": True, "PRECISION": split, **blocks}),
        ):
            signature = {**args, **dict.fromkeys(constants, "constexpr")}
            source = ASTSource(fn=fn, signature=signature, constexprs=constants)
            compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32))
            results[f"{name} {dtype} sm_{capability}"] = resources(compiled.asm["cubin"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
