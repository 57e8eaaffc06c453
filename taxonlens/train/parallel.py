"""Where a training run's steps run: its device, its precision and its processes.

A run is one process, or N data-parallel processes started by ``accelerate launch`` (or torchrun,
or ``--num-processes N`` on the ``train`` commands, which calls ``accelerate launch``): accelerate's
:class:`~accelerate.PartialState` reads the launcher's environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ...) and joins the process group (gloo on the CPU, NCCL on GPUs, each process
its own GPU).

Data parallelism keeps the run's meaning: ``batch_size`` is the **global** batch. Every optimizer
step, each process takes a contiguous share of the step's items (:meth:`Placement.share`), the
gradients are averaged over the processes (:meth:`Placement.average_gradients`) and every process
takes the same optimizer step, so N processes see the same data per step as one and their losses
agree to rounding. A task's loss is either a mean over its items, weighted by the items' weight
(:meth:`Placement.share_factor`: SFT weighs each question by its answer tokens, so the shares add up
to the token mean one process computes), or the whole batch's loss computed on every process from
the features of all of them (:meth:`Placement.gather`: contrastive training, whose every caption is
a negative of every image of the batch).

With DeepSpeed (``--deepspeed``, CUDA GPUs), the placement carries the configuration file and
the epoch loop runs its steps through the ``accelerate.Accelerator`` of
:func:`deepspeed_accelerator` (DeepSpeed's engine then averages, clips and steps).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from taxonlens.errors import TaxonlensError
from taxonlens.models.device import autocast, resolve_device, resolve_precision
from taxonlens.train.zero import deepspeed_config, deepspeed_plugin

if TYPE_CHECKING:
    from accelerate import Accelerator

T = TypeVar("T")


def launched_processes() -> int:
    """The number of processes a launcher (``accelerate launch``, torchrun) started this run with
    (``WORLD_SIZE``; 1 for a plain run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def main_process() -> bool:
    """Whether this is the main process of its run (``RANK`` 0, or no launcher)."""
    return int(os.environ.get("RANK", "0")) == 0


def launch_command(argv: Sequence[str], processes: int, port: int) -> list[str]:
    """The command that runs ``python -m taxonlens ARGV`` in ``processes`` data-parallel processes
    through ``accelerate launch`` on this machine (rendezvous at 127.0.0.1:``port``; accelerate's
    multi-process launcher, which on a machine without GPUs starts CPU processes joined by gloo)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "taxonlens", *argv]


def launch(argv: Sequence[str], processes: int) -> int:
    """Run ``taxonlens ARGV`` in ``processes`` processes (:func:`launch_command`, a free local port)
    and wait for them; returns the launcher's exit status."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run(launch_command(argv, processes, port), check=False).returncode


@dataclass(frozen=True)
class Placement:
    """A training run's device, resolved precision and place among its processes.

    Attributes:
        device: where the model and the batches are.
        precision: ``fp32``, ``bf16`` or ``fp16``: the autocast of the forward passes.
        rank: this process, ``0 .. world - 1``.
        world: the number of data-parallel processes.
        deepspeed: the DeepSpeed configuration file the run trains with, or ``None``.
    """

    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1
    deepspeed: str | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (checkpoints, metrics, the model)."""
        return self.rank == 0

    def autocast(self) -> torch.autocast:
        """The forward passes' autocast (disabled for fp32)."""
        return autocast(self.device, self.precision)

    def share(self, items: Sequence[T]) -> tuple[list[T], bool]:
        """This process's contiguous share of one step's ``items`` (sizes differ by at most one) and
        whether it counts. A process left without items (fewer items than processes) gets the
        first item with ``False``: it runs the same collectives with a weight of 0."""
        if self.world == 1:
            return list(items), True
        cut = [len(items) * r // self.world for r in range(self.world + 1)]
        mine = list(items[cut[self.rank]:cut[self.rank + 1]])
        return (mine, True) if mine else (list(items[:1]), False)

    def share_factor(self, weight: float) -> float:
        """What turns this process's mean loss over its items (whose weights sum to ``weight``)
        into its part of the step's weighted mean: ``world * weight / total weight``, so that the
        mean over the processes of the scaled losses, and of their gradients, is the mean over
        every item of the step."""
        total = self.sum(torch.tensor([float(weight)], dtype=torch.float64))
        return self.world * float(weight) / float(total)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over the processes (``x`` unchanged for one)."""
        if self.world == 1:
            return x
        import torch.distributed as dist

        out = x.detach().clone()
        dist.all_reduce(out)
        return out

    def mean(self, values: Sequence[float]) -> list[float]:
        """The means of ``values`` over the processes (each process passes the same count)."""
        if self.world == 1:
            return [float(v) for v in values]
        total = self.sum(torch.tensor([float(v) for v in values], dtype=torch.float64))
        return (total / self.world).tolist()

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, ...]`` -> ``[world * b, ...]``: every process's ``x`` in rank order (the shares
        of one batch, put back in order), with gradients: the gradient a process's ``x`` receives
        is the sum of what every process's copy sends it (all processes compute the same loss of
        the gathered batch; averaging their gradients then gives the whole batch's)."""
        return x if self.world == 1 else _GatherWithGrad.apply(x, self.rank, self.world)

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every parameter's gradient by its mean over the processes (a missing gradient
        counts as 0), in one all-reduce."""
        if self.world == 1:
            return
        import torch.distributed as dist

        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).to(g.dtype)
            offset += g.numel()

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along the first dimension whose backward all-reduces the gradient and keeps this
    process's rows (gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def placement(device: str, precision: str, deepspeed: str | None = None) -> Placement:
    """The :class:`Placement` of a run on ``device`` (a :class:`~taxonlens.models.device.Device`
    name) in ``precision`` (``auto``: the training policy of
    :func:`~taxonlens.models.device.resolve_precision`), through DeepSpeed with the configuration
    ``deepspeed`` (``zero2``, ``zero3``, a JSON file or ``None``; checked first, before anything
    loads). Under a launcher, accelerate joins the process group and, on GPUs, gives each process
    its own (``device`` ``auto`` or ``cuda``).

    Raises:
        TaxonlensError: DeepSpeed asked for and not installed, an unknown DeepSpeed configuration,
            DeepSpeed off CUDA GPUs, a device that is not here, or ``mps`` with several processes.
    """
    config_file = deepspeed_config(deepspeed)
    resolved = resolve_device(device)
    if config_file is not None and resolved.type != "cuda":
        raise TaxonlensError(f"--deepspeed {deepspeed}: DeepSpeed trains on CUDA GPUs, not on {resolved.type}; use "
                             "--device cuda (or auto on a machine with GPUs) or train without --deepspeed")
    if launched_processes() == 1:
        return Placement(resolved, resolve_precision(precision, resolved, training=True), deepspeed=config_file)
    if resolved.type == "mps":
        raise TaxonlensError("data-parallel training runs on CPUs or CUDA GPUs, not on MPS; use --device cpu")
    from accelerate import PartialState

    state = PartialState(cpu=resolved.type == "cpu")
    here = state.device if resolved.type == "cuda" else resolved
    return Placement(here, resolve_precision(precision, here, training=True), state.process_index,
                     state.num_processes, config_file)


def deepspeed_accelerator(place: Placement, batch_size: int, max_grad_norm: float) -> Accelerator:
    """The ``accelerate.Accelerator`` that runs the epoch loop's steps through DeepSpeed with
    ``place.deepspeed`` (:func:`~taxonlens.train.zero.deepspeed_plugin`): every process takes at
    most ``ceil(batch_size / world)`` items of a step (:meth:`Placement.share`), the gradient norm
    is clipped to ``max_grad_norm`` (0: not clipped), and ``place.precision`` becomes DeepSpeed's
    bf16 / fp16 mode (fp16 with DeepSpeed's loss scaling; fp32: neither)."""
    from accelerate import Accelerator

    plugin = deepspeed_plugin(str(place.deepspeed), -(-batch_size // place.world), place.world, max_grad_norm)
    return Accelerator(deepspeed_plugin=plugin, mixed_precision="no" if place.precision == "fp32" else place.precision)


__all__ = ["Placement", "deepspeed_accelerator", "launch", "launch_command", "launched_processes", "main_process",
           "placement"]
