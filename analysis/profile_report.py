#!/usr/bin/env python
"""Plot a profile: throughput and peak memory against ranks, ZeRO stage and precision (one PNG per model stage).

Example: ``python analysis/profile_report.py runs/profile/unet-*/profile.csv --out runs/profile/report``
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmark.errors import DataError
from benchmark.run.cli import main_guard

AXES = (("ranks", "ranks"), ("zero_stage", "ZeRO stage (DeepSpeed)"), ("precision", "precision"))
METRICS = (("samples_per_s", "samples / s"), ("peak_mem_gib", "peak memory (GiB)"))


def _plot_stage(df: pd.DataFrame, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(METRICS), len(AXES), figsize=(4.2 * len(AXES), 3.2 * len(METRICS)), squeeze=False)
    for col, (axis, label) in enumerate(AXES):
        data = df.dropna(subset=[axis]) if axis == "zero_stage" else df
        others = [a for a, _ in AXES if a != axis and a in data]
        for row, (metric, ylabel) in enumerate(METRICS):
            ax = axes[row, col]
            for name, group in data.groupby(["engine", *[o for o in others if o != "zero_stage"]], dropna=False):
                group = group.sort_values(axis)
                x = group[axis].astype(int) if axis == "zero_stage" else group[axis]
                ax.plot(x.astype(str), group[metric], marker="o", label="/".join(map(str, name)))
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 0 and len(ax.get_lines()):
                ax.legend(fontsize=6, title="engine/" + "/".join(o for o in others if o != "zero_stage"),
                          title_fontsize=6)  # fmt: skip
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_profile(csvs: list[Path], out: Path) -> list[Path]:
    """One PNG per (model, stage) of the suite rows with in-memory data; returns the written files."""
    frames = []
    for csv in csvs:
        if not csv.is_file():
            raise DataError(csv, "profile CSV not found")
        frames.append(pd.read_csv(csv))
    df = pd.concat(frames, ignore_index=True)
    df = df[(df["status"] == "ok") & (df["mode"] == "suite") & (df["data"] == "memory")].copy()
    if df.empty:
        raise DataError(csvs[0], "no successful suite rows to plot")
    df["peak_mem_gib"] = df["peak_mem_bytes"] / 2**30
    written = []
    for (model, stage, shape), group in df.groupby(["model", "stage", "shape"]):
        device = group["device_name"].iloc[0]
        title = f"{model} / {stage} at {shape}, batch {group['batch_size'].iloc[0]} per rank - {device}"
        written.append(_plot_stage(group, title, out / f"{model}_{stage}_{shape}.png"))
    return written


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="+", type=Path, help="profile.csv files written by launchers/profile_throughput.py")
    p.add_argument("--out", type=Path, default=Path("runs/profile/report"))
    args = p.parse_args(argv)
    for path in plot_profile(args.csv, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
