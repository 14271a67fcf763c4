"""What a forward asks of the device, counted on the CPU: the aten operations it runs (on a GPU, about one kernel
launch each), the host-device synchronisations, and the dtypes of its matrix products.

`OperationRecorder` is a `TorchDispatchMode`: it sees every aten operation below autograd and autocast, as the
device would receive them. Views, allocations and metadata launch nothing and are not counted.
"""

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operations that launch no kernel: they allocate, or describe a tensor without touching its values.
_NO_KERNEL = {
    "empty",
    "empty_strided",
    "empty_like",
    "new_empty",
    "new_empty_strided",
    "detach",
    "_unsafe_view",
    "lift_fresh",
}
# Operations that read a device value into Python: a host-device synchronisation on a GPU.
_SYNCS = {"_local_scalar_dense", "is_nonzero", "item", "equal", "_assert_async"}
# Matrix products, whose input dtypes say whether 16-bit inputs are multiplied in 16 bits.
PRODUCTS = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "_scaled_dot_product_flash_attention_for_cpu"}


class OperationRecorder(TorchDispatchMode):
    """Records the aten operations run under it: `operations` (names in order), `syncs`, and `products`
    ((name, input dtypes) of each matrix product)."""

    def __init__(self):
        super().__init__()
        self.operations: list[str] = []
        self.syncs: list[str] = []
        self.products: list[tuple[str, tuple[torch.dtype, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _SYNCS:
            self.syncs.append(name)
        if not (func.is_view or name in _NO_KERNEL):
            self.operations.append(name)
        if name in PRODUCTS:
            dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2)
            self.products.append((name, dtypes))
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, Any]:
        """The counts: operations, syncs, and the operations by name."""
        return {
            "operations": len(self.operations),
            "syncs": len(self.syncs),
            "by_name": dict(Counter(self.operations).most_common()),
        }


def record(fn, *args: Any, **kwargs: Any) -> OperationRecorder:
    """Run `fn(*args, **kwargs)` once under `torch.no_grad()` and an `OperationRecorder`; return the recorder."""
    with torch.no_grad(), OperationRecorder() as recorder:
        fn(*args, **kwargs)
    return recorder


def block_report(arch: str, size, resolution: int, batch: int = 2, dtypes=(torch.bfloat16, torch.float16)) -> dict:
    """One block of `arch` at `size` (a `BenchSize`): its operations, syncs and product dtypes in bfloat16, and
    its relative error against itself in float64 on the same inputs and weights, for each of `dtypes`."""
    from .models import build, make_runner

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build(arch, size, resolution, 1, cpu, torch.float64, "torch")
    reference = make_runner(arch, model, resolution, batch=batch, dtype=torch.float64)
    with torch.no_grad():
        expected = reference()
    row: dict[str, Any] = {"arch": arch, "tokens": (resolution // 16) ** 2, "batch": batch}
    for dtype in dtypes:
        run = make_runner(arch, model.to(dtype), resolution, batch=batch, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        if dtype == torch.bfloat16:
            recorder = record(run)
            row.update(recorder.summary())
            row["product_dtypes"] = sorted({str(d).removeprefix("torch.") for _, ds in recorder.products for d in ds})
        with torch.no_grad():
            out = run().double()
        row[f"{name}_error"] = ((out - expected).norm() / expected.norm()).item()
    return row
