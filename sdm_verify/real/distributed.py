"""Devices, precision and sharding of seeds across processes (torchrun / torch.distributed).

One process: the device asked for (CPU by default), every seed. Under `torchrun --nproc_per_node K ...` (environment
WORLD_SIZE > 1) each rank takes the seeds rank, rank + K, ... (start points are drawn per seed, so a seed's run does
not depend on the sharding), runs on cuda:LOCAL_RANK when CUDA is asked for (NCCL) or on CPU (gloo), and the
per-cell sums of squared errors are added across ranks (all_reduce), so the merged rows equal a one-process run up
to the order of floating-point summation. Rank 0 alone writes cells to the store.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch


def select_device(name: str = "cpu", local_rank: int = 0) -> torch.device:
    """'cpu', 'cuda' (cuda:local_rank) or 'cuda:k'; CUDA asked for but absent is an error, not a silent CPU run, and
    so is a CUDA index torch does not see."""
    if not isinstance(name, str) or not (name in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d+", name)):
        raise ValueError(f"device: 'cpu', 'cuda', 'cuda:K' or 'auto' (got {name!r})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} asked for but torch sees no CUDA device (torch {torch.__version__})")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        count = torch.cuda.device_count()
        if int(name.split(":")[1]) >= count:
            raise ValueError(f"device: {name!r} does not exist: torch sees {count} CUDA device(s)")
    return torch.device(name)


def exact_precision() -> dict:
    """Switch off TF32 (on Ampere+ GPUs cuDNN convolutions default to TF32, a 1e-3 relative error that floors every
    float32 measurement; docs/real-models.md §5 (c)) and return the settings in force, for the report."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return dict(cuda_matmul_tf32=torch.backends.cuda.matmul.allow_tf32, cudnn_tf32=torch.backends.cudnn.allow_tf32,
                float32_matmul_precision=torch.get_float32_matmul_precision())


def auto_batch(model, device: torch.device, dtype: torch.dtype, *, cap: int = 1024, cpu_default: int = 64,
               fraction: float = 0.5) -> int:
    """Batch size for `model` on `device`: on CUDA the largest power of two whose forward pass fits in `fraction`
    of the free memory (probed, peak memory measured; an out-of-memory probe halves it), capped; on CPU a fixed
    default (CPU memory is rarely what limits a sampler)."""
    if device.type != "cuda":
        return cpu_default
    free, _ = torch.cuda.mem_get_info(device)
    b, best = 1, 1
    while b <= cap:
        try:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            x = torch.zeros((b, *model.shape), device=device, dtype=dtype)
            model(x, float(model.sigma_max))
            peak = torch.cuda.max_memory_allocated(device) - base
            del x
            if peak > fraction * free:
                break
            best, b = b, b * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return best


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, seeds: list[int]) -> list[int]:
        return list(seeds[self.rank::self.world])

    def reduce(self, v: torch.Tensor) -> torch.Tensor:
        """Sum a float64 CPU vector over ranks (identity in one process)."""
        if not self.initialized:
            return v
        import torch.distributed as dist

        t = v.clone()
        if dist.get_backend() == "nccl":
            t = t.cuda(self.local_rank)
        dist.all_reduce(t)
        return t.cpu()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.initialized:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, t: torch.Tensor) -> torch.Tensor | None:
        """Concatenation of every rank's CPU tensor (rank order) on rank 0; None elsewhere."""
        if not self.initialized:
            return t
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, t.cpu())
        return torch.cat(parts) if self.is_main else None

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
            self.initialized = False


def context(device: str = "cpu") -> Context:
    """The process's place in a torchrun launch (initialising the process group), or a one-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Context(rank, world, local, True)
