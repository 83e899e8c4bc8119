"""Multi-rank jobs as the sweep runs them (``benchmark.run.job.execute`` under torchrun, two CPU ranks on gloo): the
one-rank epochs on two ranks with one MLflow run and one set of outputs, and every rank following rank 0's decision."""

from __future__ import annotations

import json
import textwrap

import pytest
from rank_helpers import REPO, two_ranks

GENERATOR_JOB_WORKER = textwrap.dedent(
    """
    import hashlib, json, os, pickle, sys
    import torch
    torch.set_num_threads(1)
    import benchmark.generators.train as gt
    from benchmark.engine import distributed
    from benchmark.run.job import execute

    out, rank = sys.argv[1], int(os.environ["RANK"])
    seen = {"sampled": 0}
    train_generator, sample_to_disk = gt.train_generator, gt.sample_to_disk

    def training(*args, **kwargs):  # the job's own training, watched: its weights and step counts
        model, result = train_generator(*args, **kwargs)
        weights = b"".join(p.detach().numpy().tobytes() for net in model.networks.values() for p in net.parameters())
        seen.update(digest=hashlib.sha256(weights).hexdigest(), steps=result.steps, world=result.world_size)
        return model, result

    def sampling(*args, **kwargs):
        seen["sampled"] += 1
        return sample_to_disk(*args, **kwargs)

    gt.train_generator, gt.sample_to_disk = training, sampling
    with open(f"{out}/spec.pkl", "rb") as fh:
        summary = execute(pickle.load(fh))
    distributed.cleanup()
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({**seen, "summary": summary}, fh, default=str)
    """
)


@pytest.mark.slow
def test_two_rank_generator_job_trains_the_one_rank_epochs_and_writes_once(tmp_path):
    import pickle

    from mlflow.tracking import MlflowClient
    from study_fixtures import tiny_study_overrides

    from benchmark.config import load_config, to_dict
    from benchmark.generators.train import train_generator
    from benchmark.run.job import JobSpec, job_hash, run_name
    from benchmark.study import prepare_study
    from benchmark.tracking.tracker import default_uri, ensure_experiment

    # 2 pool cases, batch 1, 2 epochs: 4 steps on one rank, 2 on each of two
    overrides = [*tiny_study_overrides(tmp_path / "out"), "train.batch_size=1", "generators.pix2pix3d.epochs=2"]
    cfg = load_config(REPO / "configs" / "default.yaml", overrides)
    study = prepare_study(cfg)  # the study's prepare job, before the generator job's ranks start
    uri = default_uri(cfg.study_dir)
    exp = ensure_experiment(uri, cfg.name, study.root / "mlartifacts")
    params = {"generator": "pix2pix3d", "seed": 0, "scope": study.scope(0)}
    spec = JobSpec("generator", run_name("generator", params), params, to_dict(cfg), uri, exp, None,
                   job_hash(cfg, "generator", params))  # fmt: skip
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(spec))
    ranks = two_ranks(GENERATOR_JOB_WORKER, tmp_path, timeout=300)

    cases = study.plan.generator_train_cases(None)
    _, maps = study.composite(params["scope"])
    _, one = train_generator("pix2pix3d", cfg.generators["pix2pix3d"], [study.arrays[c].image for c in cases],
                             [maps[c] for c in cases], num_classes=cfg.composite.num_classes, train=cfg.train,
                             out_dir=tmp_path / "one-rank", seed=0)  # fmt: skip
    assert one.steps == 4 and one.world_size == 1
    assert [r["world"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [2, 2]  # 2 x 2: the same epochs
    assert ranks[0]["digest"] == ranks[1]["digest"]  # averaged gradients: the same weights on both ranks
    assert [r["sampled"] for r in ranks] == [1, 0]  # rank 0 alone samples and writes
    assert ranks[1]["summary"] == {"key": spec.key, "rank": 1, "generator": "pix2pix3d", "scope": params["scope"],
                                   "world_size": 2, "steps_per_rank": {"gan": 2}}  # fmt: skip
    out = study.generator_dir("pix2pix3d", params["scope"], 0)
    done = json.loads((out / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps_per_rank"] == {"gan": 2}
    written = json.loads((out / "samples_all" / "samples.json").read_text())["samples"]
    assert sorted(p.name for p in (out / "samples_all" / "samples").iterdir()) == sorted(
        f"{s['case_id']}.nii.gz" for s in written
    )
    runs = MlflowClient(uri).search_runs([exp])
    assert [(r.info.run_name, r.info.status) for r in runs] == [(spec.key, "FINISHED")]
    assert runs[0].data.tags["world_size"] == "2" and runs[0].data.tags["steps_per_rank.gan"] == "2"


FOLLOW_WORKER = textwrap.dedent(
    """
    import dataclasses, json, os, pickle, sys
    import benchmark.run.job as job
    from benchmark.engine import distributed
    from benchmark.run import kinds

    out, rank = sys.argv[1], int(os.environ["RANK"])
    seen = {"trained": 0}
    # rank 0 finds the job done (another attempt finished it); rank 1 looked before that and did not
    job.done_summary = lambda spec, study: {"key": spec.key, "from": "done.json"} if rank == 0 else None
    real = kinds.get_kind("generator")

    def body(*args, **kwargs):
        seen["trained"] += 1  # a rank training alone would wait on its group for ever
        return {}

    job.get_kind = lambda name: dataclasses.replace(real, body=body)
    with open(f"{out}/spec.pkl", "rb") as fh:
        summary = job.execute(pickle.load(fh))
    distributed.cleanup()
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({**seen, "summary": summary}, fh, default=str)
    """
)


def test_every_rank_follows_rank_0s_look_at_done_json(tmp_path):
    import pickle

    from study_fixtures import tiny_study_overrides

    from benchmark.config import load_config, to_dict
    from benchmark.run.job import JobSpec, job_hash, run_name

    cfg = load_config(REPO / "configs" / "default.yaml", tiny_study_overrides(tmp_path / "out"))
    params = {"generator": "pix2pix3d", "seed": 0, "scope": "pool"}
    spec = JobSpec("generator", run_name("generator", params), params, to_dict(cfg), None, None, None,
                   job_hash(cfg, "generator", params))  # fmt: skip
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(spec))
    ranks = two_ranks(FOLLOW_WORKER, tmp_path, timeout=120)
    assert [r["trained"] for r in ranks] == [0, 0]
    assert ranks[0]["summary"] == {"key": spec.key, "from": "done.json"}
    assert ranks[1]["summary"] == {"key": spec.key, "rank": 1}
