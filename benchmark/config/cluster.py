"""The ``tracking`` and ``cluster`` sections: where runs are logged and where jobs run (``benchmark.config``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from benchmark.errors import ConfigError
from benchmark.tracking.auth import refuse_credentials_in_config, refuse_password_in_uri


@dataclass(kw_only=True)
class TrackingConfig:
    """MLflow: a sqlite store in the study folder unless a server URI is given."""

    uri: str | None = None
    experiment: str | None = None  # default: the study name
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.uri:  # refused when the config loads, before any entry point writes config.yaml or logs params
            refuse_password_in_uri(self.uri)


@dataclass(kw_only=True)
class KindResources:
    """What one job kind asks Slurm for; a key left unset takes the cluster section's value.

    ``cluster.resources.quality: {gpus_per_node: 0, cpus_per_task: 8}`` keeps image-quality jobs off the GPUs.
    """

    partition: str | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    nodes: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int | None = None
    constraint: str | None = None
    qos: str | None = None


@dataclass(kw_only=True)
class ClusterConfig:
    """Where jobs run: in process, in local processes, or on Slurm (via submitit).

    On Slurm the whole job graph is submitted at once with ``--dependency=afterok`` and the driver may exit
    (``--detach``); ``<study>/state/`` records every job's Slurm id, attempt and log paths.
    """

    executor: Literal["debug", "pool", "local", "slurm"] = "debug"
    folder: str | None = None  # submitit pickles and logs; default <study>/submitit
    partition: str | None = None
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    nodes: int = 1
    cpus_per_task: int = 1
    timeout_min: int = 60
    mem_gb: int | None = None
    account: str | None = None
    constraint: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    max_local_jobs: int = 2
    # per job kind (prepare, generator, segmentation, quality, robustness, report): overrides of the keys above
    resources: dict[str, KindResources] = field(default_factory=dict)
    # site set-up: shell lines run before each job (e.g. "module load cuda/12.6"), typed sbatch options, and
    # environment variables exported to each job (e.g. NCCL_SOCKET_IFNAME)
    setup: tuple[str, ...] = ()
    gres: str | None = None  # e.g. "gpu:v100:1" where a site asks for --gres instead of --gpus-per-node
    exclusive: bool = False
    reservation: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    sbatch: dict[str, str] = field(default_factory=dict)  # any other sbatch option, e.g. {licenses: "scratch:1"}
    max_requeues: int = 3  # requeues after a time limit or preemption (submitit's max_num_timeout)
    signal_delay_s: int = 120  # the checkpoint signal comes this long before the time limit
    submit_retries: int = 4  # a refused sbatch is tried again this many times, with back-off
    submit_backoff_s: float = 5.0  # first wait; doubled after each refusal
    poll_s: float = 10.0  # how often --follow asks Slurm for job states

    def __post_init__(self) -> None:
        if self.max_requeues < 0 or self.submit_retries < 0:
            raise ConfigError("cluster.max_requeues and cluster.submit_retries must be >= 0")
        if self.submit_backoff_s < 0 or self.poll_s <= 0:
            raise ConfigError("cluster.submit_backoff_s must be >= 0 and cluster.poll_s > 0")
        bad = [k for k in self.sbatch if not k.replace("-", "").replace("_", "").isalnum()]
        if bad:
            raise ConfigError(f"cluster.sbatch: {bad} are not sbatch option names")
        bad = [k for k in self.env if not k.replace("_", "").isalnum() or k[0].isdigit()]
        if bad:
            raise ConfigError(f"cluster.env: {bad} are not environment variable names")
        refuse_credentials_in_config(self.env)  # at load: every entry point, not only the sweep's driver

    def for_kind(self, kind: str) -> KindResources:
        """The resources of one job kind: ``resources.<kind>`` over the section's own keys."""
        own = self.resources.get(kind, KindResources())
        merged = {f.name: getattr(own, f.name) for f in dataclasses.fields(KindResources)}
        return KindResources(**{k: getattr(self, k) if v is None else v for k, v in merged.items()})
