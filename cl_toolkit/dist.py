"""Data-parallel training under ``torchrun``: the process group, rank helpers, all-gather with
gradients (the "global batch" of in-batch-negative losses) and batch norm synchronised across
ranks.

``torchrun --nproc-per-node N -m cl_toolkit pretrain ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; ``init`` joins the process group (NCCL on CUDA, gloo on the CPU). Without
torchrun every helper is the identity and nothing here costs anything.

Why a gather of our own: ``torch.distributed.nn.all_gather`` back-propagates with
reduce-scatter, which gloo does not have. Ours sums the incoming gradient over ranks with
all-reduce and keeps this rank's slice. With DistributedDataParallel averaging parameter
gradients over the W ranks, the result is the gradient of the mean of the per-rank losses,
i.e. exactly the gradient of the loss on the concatenated global batch when each rank's loss
is the mean over its own queries against all gathered keys (tests/test_dist.py checks both to
1e-5).

Why a batch norm of our own: ``torch.nn.SyncBatchNorm`` refuses CPU tensors. ``SyncBatchNorm``
here all-reduces each channel's count, sum and sum of squares (with gradients), so a batch split
over ranks is normalised as the whole batch would be; on CUDA the model gets torch's own
``nn.SyncBatchNorm`` instead.
"""

from __future__ import annotations

import atexit
import gc
import os
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor, nn


def world() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if world() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True inside a torchrun launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> None:
    """Join the process group torchrun describes (once); a no-op for a single process."""
    if not launched() or world() > 1:
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # Imported before the group exists, on purpose: torch.distributed.nn.functional binds
    # ``group.WORLD`` as a default argument of its functions when first imported, and
    # DistributedDataParallel imports it. Imported after this line, it keeps the group alive
    # past ``destroy_process_group`` with gloo's threads running into interpreter shutdown,
    # where one of them now and then aborts the process (docs/scaling.md, "shutdown").
    import torch.distributed.nn.functional as _functional  # noqa: F401

    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(finish)


def finish() -> None:
    """Leave the process group and wait for its threads to end, while the interpreter is whole
    (registered with ``atexit`` by ``init``; safe to call twice)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return
    gc.collect()  # a DistributedDataParallel kept by a reference cycle (a traceback) holds the group
    tdist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` -> this process's GPU (``cuda:LOCAL_RANK``) under torchrun."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if world() > 1:
        tdist.barrier()


def all_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    tdist.all_gather_object(out, obj)
    return out


def all_reduce_(x: Tensor, op: str = "sum") -> Tensor:
    """In-place all-reduce without gradient (``sum`` | ``max``)."""
    if world() > 1:
        tdist.all_reduce(x, op=tdist.ReduceOp.MAX if op == "max" else tdist.ReduceOp.SUM)
    return x


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.n = len(x)
        return gather_nograd(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        tdist.all_reduce(grad)
        r = rank()
        return grad[r * ctx.n:(r + 1) * ctx.n]


def gather(x: Tensor) -> tuple[Tensor, int]:
    """All ranks' rows of ``x`` (same length on every rank) concatenated in rank order, with
    gradients flowing back to each rank's own rows, and the offset of this rank's rows."""
    if world() == 1:
        return x, 0
    if x.requires_grad:
        return _Gather.apply(x), rank() * len(x)
    return gather_nograd(x), rank() * len(x)


@torch.no_grad()
def gather_nograd(x: Tensor) -> Tensor:
    if world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world())]
    tdist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def average_gradients(model: nn.Module) -> None:
    """Average ``.grad`` over ranks (one flattened all-reduce); for steps that accumulate
    gradients under ``no_sync`` (gradient caching)."""
    if world() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= world()
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()


# ---------------------------------------------------------------- synchronised batch norm

class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.clone()
        tdist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad)
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the union of every rank's batch, for any device and backend (gloo
    included). Eval mode and single-process training behave as ``nn.BatchNorm*d``."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world() == 1:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        stats = _AllReduceSum.apply(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                # momentum None: a cumulative average, as nn.BatchNorm does
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm*d`` -> a batch norm synchronised over ranks (torch's on CUDA, ours
    elsewhere), keeping parameters and running statistics."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        for p_new, p_old in zip(new.parameters(), module.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child, device))
    return module
