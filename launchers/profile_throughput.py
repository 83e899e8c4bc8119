#!/usr/bin/env python
"""Throughput profile of the U-Net or a generator: a grid of short training bursts through the engine.

Examples:
    python launchers/profile_throughput.py --model unet --steps 20 --warmup 5
    python launchers/profile_throughput.py --model spade_ldm --shape 256 256 64 --engine torch,deepspeed \\
        --zero 0,1,2 --precision fp32,bf16 --ranks 1,2 --executor slurm --config configs/paper.yaml

Writes <out>/profile.csv (one row per configuration and training stage) and <out>/summary.json; logs to MLflow
(experiment "profiling") unless --no-tracking. key=value pairs before, between or after the flags override the
study config; the FIELD=VALUE pairs right after --set (up to the next flag) are model config fields.
"""

import argparse
import json
import sys

from benchmark.config import parse_overrides
from benchmark.errors import ConfigError
from benchmark.profiling.grid import GridOptions, run_profile
from benchmark.run.cli import main_guard
from benchmark.study import writable_folder


def _list(kind):
    def parse(text):
        try:
            return tuple(kind(v) for v in text.split(",") if v)
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list") from None

    return parse


def _onoff(value):
    return {"on": True, "off": False}[value.strip().lower()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="unet or a generator name (pix2pix3d, spade_gan, spade_ldm)")
    p.add_argument("--shape", type=int, nargs=3, help="volume X Y Z (default: the config's preprocess.shape)")
    p.add_argument("--batch-size", type=int, help="per rank (default: the study's batch size for the model)")
    p.add_argument("--engine", type=_list(str), default=("torch",), help="torch,deepspeed")
    p.add_argument("--zero", type=_list(int), default=(2,), help="ZeRO stages for the deepspeed engine: 0,1,2")
    p.add_argument("--precision", type=_list(str), default=("fp32",), help="fp32,bf16,fp16")
    p.add_argument("--ranks", type=_list(int), default=(1,), help="processes per configuration, e.g. 1,2")
    p.add_argument("--compile", type=_list(_onoff), default=(False,), help="on,off")
    p.add_argument("--channels-last", type=_list(_onoff), default=(False,), help="on,off")
    p.add_argument("--steps", type=int, default=50, help="timed steps per stage")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (the first counts FLOPs)")
    p.add_argument("--rounds", type=int, default=3, help="alternations of baseline, reference and loader check")
    p.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: cores / ranks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tiny", action="store_true", help="tiny() generator configs / a small U-Net")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="model fields, up to the next flag")
    p.add_argument("--no-reference", action="store_true", help="skip the bare-loop reference")
    p.add_argument("--no-loader", action="store_true", help="skip the real-data-loader check")
    p.add_argument("--no-sampling", action="store_true", help="skip the sampling times")
    p.add_argument("--in-process", action="store_true", help="debug executor: measure in this process")
    p.add_argument("--executor", choices=("debug", "pool", "local", "slurm"), help="default: cluster.executor")
    p.add_argument("--config", default="configs/default.yaml", help="study config (model sections, data, cluster)")
    p.add_argument("--out", help="output folder (default runs/profile/<model>-<time>)")
    p.add_argument("--tracking-uri", help="MLflow URI (default: sqlite in the output folder's parent)")
    p.add_argument("--experiment", default="profiling")
    p.add_argument("--no-tracking", action="store_true")
    p.add_argument("overrides", nargs="*", help="study config key=value overrides, before or after the flags")
    return p.parse_intermixed_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.out:
        writable_folder(args.out, "output folder (--out)")  # before any configuration is measured
    model_set = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected FIELD=VALUE")
        model_set.update(parse_overrides([item]))
    opts = GridOptions(
        model=args.model, shape=tuple(args.shape) if args.shape else None, batch_size=args.batch_size,
        engines=args.engine, zero=args.zero, precisions=args.precision, ranks=args.ranks, compile=args.compile,
        channels_last=args.channels_last, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
        threads=args.threads, seed=args.seed, tiny=args.tiny, model_set=model_set, reference=not args.no_reference,
        loader=not args.no_loader, sampling=not args.no_sampling, isolate=not args.in_process, device=args.device,
        executor=args.executor, out=args.out, tracking=not args.no_tracking, tracking_uri=args.tracking_uri,
        experiment=args.experiment, config_path=args.config, overrides=tuple(args.overrides),
    )  # fmt: skip
    csv, summary = run_profile(opts)
    print(json.dumps(summary, indent=1, default=str))
    print(f"wrote {csv}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
