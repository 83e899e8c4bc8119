"""FLOPs of one training step of the paper's U-Net: the profiler's counter against a closed-form count.

The counter (``FlopCounterMode``, as used by ``launchers/profile_throughput.py``) runs forward + backward on the
meta device (no memory, no compute); the closed form sums 2 * k^3 * Cin * Cout * voxels per convolution from the
layer list of MONAI's UNet, x3 for forward + backward (x2 for the layers fed by the image, which get no input
gradient).

    .venv/bin/python benchmarks/unet_flops.py                      # 256x256x64, channels 32..512, 2 residual units
    .venv/bin/python benchmarks/unet_flops.py --shape 32 32 16 --channels 8 16 32 64 128 --res-units 1
"""

from __future__ import annotations

import argparse
import json

import torch
from monai.networks.nets import UNet

from benchmark.profiling.flops import network_step_flops, unet_training_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 64))
    parser.add_argument("--channels", type=int, nargs="+", default=(32, 64, 128, 256, 512))
    parser.add_argument("--res-units", type=int, default=2)
    parser.add_argument("--out-channels", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    strides = (2,) * (len(args.channels) - 1)
    with torch.device("meta"):
        net = UNet(3, 1, args.out_channels, tuple(args.channels), strides, num_res_units=args.res_units,
                   norm="INSTANCE", dropout=0.2)  # fmt: skip
    counted = network_step_flops(net, (args.batch, 1, *args.shape))
    closed = unet_training_flops(args.shape, args.channels, strides, args.res_units, out_channels=args.out_channels,
                                 batch=args.batch)  # fmt: skip
    print(json.dumps({"shape": list(args.shape), "channels": list(args.channels), "res_units": args.res_units,
                      "batch": args.batch, "counted_flops": counted, "closed_form_flops": closed,
                      "counted_tflop": round(counted / 1e12, 4), "ratio": counted / closed}))  # fmt: skip


if __name__ == "__main__":
    main()
