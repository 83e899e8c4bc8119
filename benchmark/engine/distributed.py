"""Process-group set-up: the only module in the suite that initialises ``torch.distributed``.

The rank, local rank and world size come from, in this order of precedence:

1. torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
2. submitit (``SUBMITIT_EXECUTOR`` set; ``submitit.helpers.TorchDistributedEnvironment`` reads the job);
3. Slurm (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master is the first host of
   ``SLURM_JOB_NODELIST``, parsed without calling ``scontrol``);
4. otherwise a single process (rank 0 of 1).

The variables torchrun would set are exported before the group is created, so DeepSpeed (which insists on
``LOCAL_RANK``) and ``init_method="env://"`` see the same values.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from benchmark.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Args:
        rank: global rank.
        local_rank: rank on this node (selects the GPU).
        world_size: number of processes.
        master_addr: host of rank 0.
        master_port: rendezvous port on ``master_addr``.
        source: ``"torchrun"``, ``"submitit"``, ``"slurm"`` or ``"single"``.
    """

    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    source: str


def first_host(nodelist: str) -> str:
    """First host name of a Slurm node list such as ``"gpu[003-005,009],cpu1"`` (-> ``"gpu003"``).

    Args:
        nodelist: the value of ``SLURM_JOB_NODELIST``.

    Returns:
        The first host name, zero padding kept.
    """
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip())
    if match is None or not (match.group(1) or match.group(2)):
        raise ConfigError(f"SLURM_JOB_NODELIST: cannot parse {nodelist!r}")
    prefix, ranges, suffix = match.group(1), match.group(2), match.group(3)
    if ranges is None:
        return prefix + suffix
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}{suffix}"


def _int_env(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ConfigError(f"{key}: expected an integer, got {env[key]!r}") from None


def _slurm_port(env: Mapping[str, str]) -> int:
    if "MASTER_PORT" in env:
        return _int_env(env, "MASTER_PORT")
    # every task of a job derives the same port from the job id without talking to the others
    job_id = env.get("SLURM_JOB_ID", "0")
    return 20000 + int(job_id) % 20000 if job_id.isdigit() else 29500


def detect_env(env: Mapping[str, str] | None = None) -> DistEnv:
    """Read rank, local rank, world size and the rendezvous address from the environment.

    Args:
        env: the environment to read; ``os.environ`` when None.

    Returns:
        The ``DistEnv`` of this process (``source="single"`` outside any launcher).
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=_int_env(env, "RANK"),
            local_rank=_int_env(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
            world_size=_int_env(env, "WORLD_SIZE"),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else 29500,
            source="torchrun",
        )
    if env.get("SUBMITIT_EXECUTOR") and env is os.environ:
        import submitit.helpers

        tde = submitit.helpers.TorchDistributedEnvironment()
        return DistEnv(
            rank=tde.rank,
            local_rank=tde.local_rank,
            world_size=tde.world_size,
            master_addr=tde.master_addr,
            master_port=tde.master_port,
            source="submitit",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return DistEnv(
            rank=_int_env(env, "SLURM_PROCID"),
            local_rank=_int_env(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
            world_size=_int_env(env, "SLURM_NTASKS"),
            master_addr=first_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "127.0.0.1"))),
            master_port=_slurm_port(env),
            source="slurm",
        )
    return DistEnv(rank=0, local_rank=0, world_size=1, master_addr="127.0.0.1", master_port=29500, source="single")


def _export(denv: DistEnv) -> None:
    os.environ.setdefault("LOCAL_RANK", str(denv.local_rank))  # DeepSpeed asserts it exists
    if denv.source == "single":
        return  # a lone process must not look like a torchrun rank to later detect_env calls
    values = {
        "RANK": denv.rank,
        "LOCAL_RANK": denv.local_rank,
        "WORLD_SIZE": denv.world_size,
        "MASTER_ADDR": denv.master_addr,
        "MASTER_PORT": denv.master_port,
    }
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def init_distributed(backend: str | None = None) -> DistEnv:
    """Create the default process group once (later calls return the same ``DistEnv``).

    A single process also gets a (one-member) group, backed by an in-memory store, so DeepSpeed and
    collective calls work unchanged without a launcher.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; None picks NCCL when CUDA is available, else gloo.

    Returns:
        The ``DistEnv`` of this process.
    """
    denv = detect_env()
    _export(denv)
    if dist.is_initialized():
        return denv
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    # torch._dynamo, imported lazily by the first optimizer, keeps a reference to a process group that exists
    # when it is imported: destroy_process_group then leaves gloo's worker threads running, and one of them
    # freeing a finished collective's tensors while the interpreter shuts down aborts the rank (SIGABRT,
    # "terminate called without an active exception") after its work is done. Imported first, it holds none.
    importlib.import_module("torch._dynamo")
    if backend == "nccl":
        torch.cuda.set_device(denv.local_rank % torch.cuda.device_count())
    if denv.world_size == 1:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group(backend, init_method="env://", rank=denv.rank, world_size=denv.world_size)
    return denv


def get_rank() -> int:
    """Global rank (0 when no group exists)."""
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when no group exists)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on global rank 0 (and in a single process)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op without a group of more than one process."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` in place over all ranks (unchanged in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> None:
    """Copy ``tensor`` from rank ``src`` to every rank (no-op in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src=src)


def cleanup() -> None:
    """Destroy the default process group if one exists (gloo's worker threads end with it)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _all_reduce_worker(rank: int, world: int, backend: str, port: int, numel: int, repeats: int, folder: str) -> None:
    """One process of ``all_reduce_check``: sums ``rank + 1`` over the group, checks the sum, times the call."""
    import json
    import statistics
    import time

    importlib.import_module("torch._dynamo")  # as in init_distributed: the group must end with destroy
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        tensor = torch.full((numel,), float(rank + 1), device=device)
        dist.all_reduce(tensor)  # also the warm-up: the first call sets up the communicators
        ok = bool((tensor == world * (world + 1) / 2).all())
        times = []
        for _ in range(repeats):
            if backend == "nccl":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            dist.all_reduce(tensor)
            if backend == "nccl":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        if rank == 0:
            seconds = statistics.median(times)
            bus = 2 * (world - 1) / world * numel * tensor.element_size() / seconds  # nccl-tests' bus bandwidth
            result = {"world": world, "backend": backend, "ok": ok, "bytes": numel * tensor.element_size()}
            result |= {"seconds": seconds, "bus_bytes_per_s": bus}
            with open(os.path.join(folder, "result.json"), "w") as fh:
                json.dump(result, fh)
    finally:
        dist.destroy_process_group()


def all_reduce_check(world: int, backend: str = "nccl", numel: int = 2**24, repeats: int = 5) -> dict[str, object]:
    """An all-reduce across ``world`` fresh local processes (one per GPU with NCCL): its sum checked, its time taken.

    Each process joins its own group over TCP on this host, so the check needs no launcher and leaves this
    process without a group.

    Args:
        world: processes (the visible GPUs for ``nccl``).
        backend: ``nccl`` (process ``r`` on ``cuda:r``) or ``gloo`` (CPU).
        numel: float32 elements all-reduced (default 64 MiB).
        repeats: timed calls after the checked one; the median is reported.

    Returns:
        ``world``, ``backend``, ``ok`` (every element held the expected sum), ``bytes``, ``seconds`` (median of one
        call) and ``bus_bytes_per_s`` (nccl-tests' bus bandwidth). Raises ``ConfigError`` with the first line of a
        process's error when one fails (e.g. NCCL cannot reach a GPU).
    """
    import json
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as folder:
        args = (world, backend, _free_port(), numel, repeats, folder)
        try:
            mp.start_processes(_all_reduce_worker, args=args, nprocs=world, join=True, start_method="spawn")
        except mp.ProcessRaisedException as exc:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            raise ConfigError(f"{backend} all-reduce over {world} processes failed: {lines[-1][:300]}") from None
        except mp.ProcessExitedException as exc:
            raise ConfigError(f"{backend} all-reduce over {world} processes failed: {exc}") from None
        with open(os.path.join(folder, "result.json")) as fh:
            return json.load(fh)
