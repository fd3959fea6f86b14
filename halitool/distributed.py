"""The one torchrun helper: the process group of a multi-process run, and the collectives halitool needs.

Under ``torchrun`` (WORLD_SIZE > 1) :func:`process_group` joins (or reuses) the process group, gloo on the CPU
and NCCL on GPUs; in a single process it returns a group of one whose collectives are no-ops, so callers need
no special case. ``train`` averages gradients with it, ``extract`` splits rows and agrees on success with it.

Why train does not use ``DistributedDataParallel``: ALI updates both players from one forward pass with two
losses whose gradients go to disjoint parameter sets (``torch.autograd.grad`` of the discriminator loss for the
discriminator, of the generator loss for the encoders and decoders). DDP all-reduces inside ``backward()`` of
the module's ``forward``, once per forward; it has no hook for two ``autograd.grad`` calls on a custom method.
Instead every gradient of a step is averaged in one flattened all-reduce (:meth:`ProcessGroup.average`), the
bucketed exchange DDP would do, without the per-tensor round trips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from halitool import settings


@dataclass
class ProcessGroup:
    rank: int = 0
    world: int = 1
    created: bool = False  # whether this process initialised the group (and so must destroy it)

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the files and reports."""
        return self.rank == 0

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the processes, in one all-reduce of their concatenation."""
        if self.world == 1 or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Every process takes rank 0's buffers (batch-norm statistics), so all hold the same model."""
        if self.world > 1:
            import torch.distributed as dist

            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def all_ok(self, ok: bool, device: torch.device) -> bool:
        """Every process's ``ok`` reduced with AND (a collective: every process must call it)."""
        if self.world == 1:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([0 if ok else 1], dtype=torch.int32, device=device)
        dist.all_reduce(flag)
        return int(flag.item()) == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.created:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def process_group(device: torch.device) -> ProcessGroup:
    """The torchrun process group of this process (joined on first use), or a group of one."""
    env = settings.torchrun()
    if env.world <= 1:
        return ProcessGroup()
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return ProcessGroup(rank=dist.get_rank(), world=dist.get_world_size(), created=created)
