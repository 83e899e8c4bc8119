"""Rank detection from launcher environments; real two-rank runs on gloo: DeepSpeed ZeRO-2 against the torch engine
(incl. an R1 penalty), and ranks that disagree (a NaN loss on one rank, gradients only some ranks have)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from rank_helpers import two_ranks

from benchmark.engine.distributed import detect_env, first_host
from benchmark.errors import ConfigError


def test_torchrun_env_wins():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"}
    env |= {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}  # torchrun inside an allocation: torchrun's view counts
    denv = detect_env(env)
    assert (denv.rank, denv.local_rank, denv.world_size, denv.master_addr, denv.master_port) == (3, 1, 4, "n1", 1234)
    assert denv.source == "torchrun"


def test_slurm_env():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[007-010,12]"}
    env["SLURM_JOB_ID"] = "123456"
    denv = detect_env(env)
    assert (denv.rank, denv.local_rank, denv.world_size, denv.master_addr) == (5, 1, 8, "gpu007")
    assert denv.master_port == 20000 + 123456 % 20000 and denv.source == "slurm"


def test_single_process_env():
    denv = detect_env({})
    assert (denv.rank, denv.world_size, denv.source) == (0, 1, "single")


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("node1", "node1"), ("cn[03-05]", "cn03"), ("a[1,4-6],b2", "a1"), ("x-[09-11]-ib", "x-09-ib"), ("h1,h2", "h1")],
)
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_bad_rank_value():
    with pytest.raises(ConfigError, match="SLURM_PROCID: expected an integer"):
        detect_env({"SLURM_PROCID": "x", "SLURM_NTASKS": "2"})


WORKER = textwrap.dedent(
    """
    import dataclasses, json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from benchmark.engine import distributed
    from benchmark.config import TrainConfig
    from benchmark.generators import GENERATORS
    from benchmark.generators.train import train_generator

    out = sys.argv[1]
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, (32, 32, 16)).astype(np.uint8) for _ in range(8)]
    images = [lab.astype(np.float32) / 3 for lab in labels]
    report = {}
    for engine, zero in (("deepspeed", 2), ("torch", None)):
        train = TrainConfig(engine=engine, zero_stage=zero, batch_size=1, log_every=1, checkpoint_every=100)
        model, result = train_generator(
            "pix2pix3d", GENERATORS["pix2pix3d"].config_cls.tiny(), images, labels, num_classes=4, train=train,
            out_dir=f"{out}/{engine}", seed=0, steps=6,  # a one-rank job's steps: 3 per rank
        )
        sums = {n: float(sum(p.detach().double().sum() for p in net.parameters()))
                for n, net in model.networks.items()}
        report[engine] = {"steps": result.steps, "sums": sums, "losses": [h["g_l1"] for h in result.history]}
    rank = distributed.get_rank()
    # SPADE-LDM's R1 penalty (torch.autograd.grad on D) under ZeRO-2: it once tripped DeepSpeed's backward hooks
    ldm_cfg = dataclasses.replace(GENERATORS["spade_ldm"].config_cls.tiny(), r1_warmup=0, ae_steps=4, diffusion_steps=2)
    small = [lab[:16, :16, :] for lab in labels[:4]]
    for engine, zero in (("deepspeed", 2), ("torch", None)):
        train = TrainConfig(engine=engine, zero_stage=zero, batch_size=1, log_every=1, checkpoint_every=100)
        model, result = train_generator(
            "spade_ldm", ldm_cfg, [lab.astype(np.float32) / 3 for lab in small], small, num_classes=4, train=train,
            out_dir=f"{out}/ldm-{engine}", seed=0,
        )
        sums = {n: float(sum(p.detach().double().sum() for p in net.parameters()))
                for n, net in model.networks.items()}
        report["ldm-" + engine] = {"sums": sums, "r1": [h["r1"] for h in result.history if "r1" in h],
                                   "latent_scale": model.latent_scale}
    report["world"] = distributed.get_world_size()
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(report, fh)
    distributed.cleanup()
    """
)


@pytest.mark.slow
def test_two_ranks_deepspeed_zero2_agree(tmp_path):
    ranks = two_ranks(WORKER, tmp_path, timeout=240)
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    ds = [r["deepspeed"] for r in ranks]
    assert ds[0]["steps"] == ds[1]["steps"] == 3
    assert ds[0]["sums"] == ds[1]["sums"]  # ZeRO-2 all-gathers the same updated weights on both ranks
    assert ds[0]["losses"] != ds[1]["losses"]  # ...while each rank drew its own batches
    # the torch engine averages gradients over ranks the way DeepSpeed does
    torch_path = [r["torch"] for r in ranks]
    assert torch_path[0]["sums"] == torch_path[1]["sums"]
    assert torch_path[0]["losses"] == pytest.approx(ds[0]["losses"], rel=1e-5)
    for name, value in ds[0]["sums"].items():
        assert torch_path[0]["sums"][name] == pytest.approx(value, rel=1e-5)
    assert (tmp_path / "deepspeed" / "checkpoints" / "ckpt-000000003" / "generator").is_dir()
    ldm = [r["ldm-deepspeed"] for r in ranks]
    assert ldm[0]["sums"] == ldm[1]["sums"] and all(v > 0 for v in ldm[0]["r1"])
    assert ldm[0]["latent_scale"] == ldm[1]["latent_scale"]  # one scale for all ranks, not each rank's own
    for name, value in ldm[0]["sums"].items():
        assert ranks[0]["ldm-torch"]["sums"][name] == pytest.approx(value, rel=1e-4), name


DIVERGING_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from benchmark.engine import distributed
    from benchmark.config import TrainConfig
    from benchmark.engine.loop import fit
    from benchmark.engine.backends import all_reduce_grads
    from benchmark.errors import TrainingError
    from test_engine import Toy, batch_fn

    out, rank = sys.argv[1], int(os.environ["RANK"])
    train = TrainConfig(engine="torch", batch_size=4, log_every=1, checkpoint_every=100, prefetch=0)
    try:
        fit(Toy(nan_at=2 if rank == 1 else None, steps=(10, 4)), batch_fn, train=train, out_dir=f"{out}/run", seed=0)
        report = {"error": "finished"}
    except TrainingError as exc:
        report = {"error": str(exc)}
    # gradients that differ between ranks: rank 0 used the first two parameters, rank 1 the first, nobody the third
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((3,), (2, 2), (4,))]
    params[0].grad = torch.full((3,), 1.0 + 2 * rank)
    if rank == 0:
        params[1].grad = torch.full((2, 2), 2.0)
    all_reduce_grads(params, bucket_bytes=16)  # small buckets: the layout crosses parameters
    report["grads"] = [p.grad.tolist() if p.grad is not None else None for p in params]
    distributed.cleanup()
    # gloo's threads must end with the group: one left running can abort the rank at interpreter exit
    report["threads"] = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(report, fh)
    """
)


@pytest.fixture(scope="module")
def diverging_ranks(tmp_path_factory):
    """Two gloo ranks that disagree: a NaN loss on rank 1 only, and gradients that only rank 0 has."""
    return two_ranks(DIVERGING_WORKER, tmp_path_factory.mktemp("diverging"), timeout=180)


@pytest.mark.slow
def test_nan_loss_on_one_rank_stops_every_rank_at_that_step(diverging_ranks):
    # without the shared check rank 0 goes on into step 3's gradient all-reduce and dies there with gloo's
    # "Connection closed by peer", which names neither the loss nor the step (NCCL would wait for its timeout)
    assert diverging_ranks[1]["error"] == "stage 'first' step 2: loss 'mse' is nan (not finite)"
    assert diverging_ranks[0]["error"].startswith("stage 'first' step 2: a loss is not finite on another rank")


@pytest.mark.slow
def test_gradient_average_when_ranks_have_different_gradients(diverging_ranks):
    # the mean over ranks, a missing gradient counting as zeros; None only where no rank had one
    expected = [[2.0, 2.0, 2.0], [[1.0, 1.0], [1.0, 1.0]], None]
    assert diverging_ranks[0]["grads"] == diverging_ranks[1]["grads"] == expected


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names are read from /proc")
def test_process_group_threads_end_at_cleanup(diverging_ranks):
    # an optimizer made after the group exists imports torch._dynamo, which used to keep the group (and gloo's
    # worker threads) alive past destroy_process_group; those threads then aborted ~1 run in 8 at exit
    for rank in diverging_ranks:
        assert not [t for t in rank["threads"] if "gloo" in t], rank["threads"]


PREEMPTED_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from benchmark.engine import distributed
    from benchmark.config import TrainConfig
    from benchmark.engine.loop import fit
    from test_engine import Toy, batch_fn

    class Requeued(Exception):
        pass

    out, rank = sys.argv[1], int(os.environ["RANK"])
    calls = []

    def handler(signum, frame):  # stands in for submitit's: checkpoints on disk when it runs, then the exit
        calls.append(sorted(p.name for p in os.scandir(f"{out}/run/checkpoints")))
        raise Requeued

    signal.signal(signal.SIGUSR2, handler)

    class SignalledToy(Toy):
        def train_step(self, ctx, stage, batch):
            if rank == 1 and (stage.name, ctx.step) == ("first", 2):
                os.kill(os.getpid(), signal.SIGUSR2)  # only rank 1 is signalled, in the middle of its step 2
            return super().train_step(ctx, stage, batch)

    train = TrainConfig(engine="torch", batch_size=4, log_every=1, checkpoint_every=100, prefetch=0)
    model = SignalledToy(steps=(10, 4))  # one-rank steps: (5, 2) per rank
    try:
        fit(model, batch_fn, train=train, out_dir=f"{out}/run", seed=0)
        stopped = False
    except Requeued:
        stopped = True
    trained = model.calls
    runs = {}
    for name in ("run", "straight"):
        toy = Toy(steps=(10, 4))
        result = fit(toy, batch_fn, train=train, out_dir=f"{out}/{name}", seed=0)
        sums = [float(sum(p.double().sum() for p in net.parameters())) for net in toy.networks.values()]
        runs[name] = {"losses": [h["mse"] for h in result.history], "sums": sums,
                      "resumed_from": result.resumed_from and result.resumed_from.name}
    report = {"stopped": stopped, "calls": calls, "trained": trained, **runs}
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(report, fh)
    distributed.cleanup()
    """
)


@pytest.mark.slow
def test_signal_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    ranks = two_ranks(PREEMPTED_WORKER, tmp_path, timeout=180)
    for r in ranks:
        # rank 0 never got the signal: it learnt of it through the step's all-reduce and stopped at the same step,
        # after the collective checkpoint of the 3 finished steps
        assert r["stopped"] and r["trained"] == 3
        assert r["calls"] == [["ckpt-000000003"]]
        assert r["run"]["resumed_from"] == "ckpt-000000003"
        assert r["run"]["sums"] == r["straight"]["sums"]
        assert r["run"]["losses"][3:] == r["straight"]["losses"][3:]  # the steps trained after the resume
    # the history in a checkpoint is rank 0's (the one that is logged): there it is the uninterrupted run's
    assert ranks[0]["run"]["losses"] == ranks[0]["straight"]["losses"]
    assert ranks[0]["run"]["losses"][3:] != ranks[1]["run"]["losses"][3:]  # each rank has its own batches
