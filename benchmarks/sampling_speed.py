"""End-to-end SPADE-LDM sampling time: DDIM (default 50 steps) against DDPM (all 1000 steps) on one volume.

Both samplers run the same networks with null-mask guidance (two U-Net calls per step) and include decoding
the latent with the SPADE autoencoder. Weights are untrained: sampling cost does not depend on them.

    .venv/bin/python benchmarks/sampling_speed.py             # configs/default.yaml's shape 32x32x16, default widths
    .venv/bin/python benchmarks/sampling_speed.py --shape 64 64 32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmark.generators.spade_ldm import SpadeLdmConfig, build


def _time(model, label: torch.Tensor, sampler: str, steps: int | None, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.sample(label, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps)
        best = min(best, time.perf_counter() - t0)
    assert out.shape == label.shape
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 32, 16))
    parser.add_argument("--num-classes", type=int, default=7)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="best of N (DDIM and DDPM each)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = SpadeLdmConfig()
    model = build(cfg, args.num_classes, tuple(args.shape))
    for net in model.networks.values():
        net.eval()
    label = torch.randint(0, args.num_classes, (1, 1, *args.shape), generator=torch.Generator().manual_seed(0))
    model.sample(label, sampler="ddim", steps=2)  # warm-up (allocator, kernel selection)
    ddim = _time(model, label, "ddim", args.ddim_steps, args.repeats)
    ddpm = _time(model, label, "ddpm", None, args.repeats)
    result = {
        "shape": list(args.shape),
        "latent_shape": list(model.latent_shape),
        "threads": args.threads,
        "guidance": cfg.guidance,
        f"ddim{args.ddim_steps}_s": round(ddim, 3),
        f"ddpm{cfg.num_train_timesteps}_s": round(ddpm, 3),
        "speedup": round(ddpm / ddim, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
