"""Running one job on several processes (``torchrun``): context, samplers, agreement.

``torchrun`` starts one process per GPU and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). A single process
without these variables is a world of one, and every helper here is then a no-op.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from dsifn.errors import ConfigError, DSIFNError

__all__ = [
    "DistContext",
    "EpochSampler",
    "ShardSampler",
    "agree",
    "agree_gather",
    "all_reduce_sum",
    "broadcast_buffers",
    "gather_objects",
    "on_main",
    "process_device",
    "setup_distributed",
    "this_process",
]


@dataclass
class DistContext:
    """This process's place in the run."""

    rank: int = 0  # global rank; rank 0 writes files and shows progress
    world_size: int = 1  # number of processes
    local_rank: int = 0  # rank on this node; picks the GPU
    owns_group: bool = False  # this context created the process group and must destroy it
    local_world_size: int = 1  # processes on this node, sharing its cores

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there are several processes."""
        return self.world_size > 1

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer") from exc


def this_process() -> DistContext:
    """Which process this is, as ``torchrun``'s environment says (without joining a group).

    The one reader of ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``: a
    process without them is rank 0 of a world of one.

    Raises:
        ConfigError: If one of them is not an integer.
    """
    return DistContext(
        rank=_env_int("RANK", 0),
        world_size=max(_env_int("WORLD_SIZE", 1), 1),
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world_size=max(_env_int("LOCAL_WORLD_SIZE", 1), 1),
    )


def setup_distributed(device: torch.device) -> DistContext:
    """Join the process group described by the environment, if any.

    Args:
        device: The device this process trains on; CUDA uses the nccl backend, the CPU gloo.

    Returns:
        The context; a world of one when ``WORLD_SIZE`` is unset or 1.
    """
    place = this_process()
    if dist.is_available() and dist.is_initialized():
        return dataclasses.replace(place, rank=dist.get_rank(), world_size=dist.get_world_size())
    if place.world_size <= 1:
        return DistContext()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=place.rank, world_size=place.world_size)
    return dataclasses.replace(place, owns_group=True)


def agree(ctx: DistContext, ok: bool, error: BaseException | None = None) -> None:
    """Make every process fail together when one of them failed.

    A failure on one rank (an invalid dataset seen by rank 0, say) would otherwise leave the
    others waiting forever in the next collective operation.

    Args:
        ctx: The run's context.
        ok: Whether this process succeeded.
        error: This process's exception, re-raised here when it failed.

    Raises:
        The exception of this process, or a :class:`DSIFNError` on the processes that did not
        fail themselves.
    """
    if ctx.distributed:
        flag = torch.tensor([1 if ok else 0], dtype=torch.int64, device=_comm_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        all_ok = bool(flag.item())
    else:
        all_ok = ok
    if not ok and error is not None:
        raise error
    if not all_ok:
        raise DSIFNError(f"another training process failed (this is rank {ctx.rank}): see rank 0")


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_buffers(ctx: DistContext, model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank.

    Each rank updates its BatchNorm running statistics from its own batches, so without this
    the ranks would validate and end with slightly different models.
    """
    if not ctx.distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Sum a few numbers over all processes (float64)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (on every rank)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


T = TypeVar("T")


def on_main(ctx: DistContext, work: Callable[[], T]) -> T:
    """``work()`` on the main process, its value for every process; if it fails, all stop.

    The others wait in :func:`agree_gather` and stop with the main process's message.
    """
    value: Any = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            value = work()
        except Exception as exc:  # re-raised by agree_gather() after telling the others
            error = exc
    first: T = agree_gather(ctx, value, error)[0]
    return first


def agree_gather(ctx: DistContext, value: Any, error: BaseException | None = None) -> list[Any]:
    """Every process's ``value`` in rank order, unless one failed: then every process stops.

    Like :func:`agree`, but the processes that did not fail stop with the failed one's message
    (the first failed rank's), so whichever rank's output a user reads says what went wrong,
    and each process's value travels with the agreement (a plan made by rank 0, the results
    of a round of work).

    Args:
        ctx: The run's context.
        value: What this process contributes (picklable); ignored when it failed.
        error: This process's exception, or None when it succeeded.

    Returns:
        The values of every process, in rank order (this process's alone without torchrun).

    Raises:
        The exception of this process, or a :class:`DSIFNError` naming the failed rank and its
        message on the processes that did not fail themselves.
    """
    if not ctx.distributed:
        if error is not None:
            raise error
        return [value]
    text = None if error is None else _error_text(error)
    outcomes = gather_objects(ctx, (None if error is not None else value, text))
    if error is not None:
        raise error
    for rank, (_, message) in enumerate(outcomes):
        if message is not None:
            raise DSIFNError(f"rank {rank} failed: {message}")
    return [found for found, _ in outcomes]


def _error_text(error: BaseException) -> str:
    # One line: the message of one of our errors, else the exception's class and message.
    text = str(error) if isinstance(error, DSIFNError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split()) or type(error).__name__


def process_device(ctx: DistContext, device: torch.device) -> torch.device:
    """The device this process computes on: its own GPU when several processes use CUDA.

    A CUDA device without an index becomes ``cuda:LOCAL_RANK`` (modulo the GPUs present, so
    that more processes than GPUs on a node share them); a device with an index, the CPU, or
    a single process keep ``device``.
    """
    if not ctx.distributed or device.type != "cuda" or device.index is not None:
        return device
    return torch.device("cuda", ctx.local_rank % max(torch.cuda.device_count(), 1))


class EpochSampler(Sampler[int]):
    """Training order: a permutation that is a pure function of (seed, epoch), sharded by rank.

    Like ``DistributedSampler``: the permutation is padded by repetition to a multiple of the
    world size and rank ``r`` takes every ``world_size``-th index from ``r``. ``skip`` drops the
    first positions of this epoch's shard, so a run resumed mid-epoch sees the rest of exactly
    the order it would have seen.
    """

    def __init__(
        self, size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        """Describe the order of a dataset of ``size`` items."""
        self.size = size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's permutation and how many leading positions to leave out."""
        self.epoch = epoch
        self.skip = skip

    def shard(self) -> list[int]:
        """This rank's full index list for the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world_size)
        total = per_rank * self.world_size
        padded = (order * math.ceil(total / max(self.size, 1)))[:total]
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.skip :])

    def __len__(self) -> int:
        return max(math.ceil(self.size / self.world_size) - self.skip, 0)


class ShardSampler(Sampler[int]):
    """Evaluation order: rank ``r`` takes items r, r + world, ... with no padding.

    Padding as ``DistributedSampler`` does would count some images twice in the metrics.
    """

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1) -> None:
        """Describe the shard of a dataset of ``size`` items."""
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
