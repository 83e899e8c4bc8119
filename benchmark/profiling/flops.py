"""FLOP counting for the profiler: the counter (``torch.utils.flop_counter``) and closed forms to check it against.

The profiler counts one training step with ``FlopCounterMode`` (matrix products, convolutions and attention;
element-wise work such as norms, activations and the optimizer update is not counted, as is usual for MFU).
The closed forms below are written out by hand from the layer shapes, independently of the counter:

- a 3D convolution costs ``2 * B * Cin/groups * Cout * k^3 * V_out`` FLOPs forward (a multiply and an add per
  weight and output voxel); a transposed one ``2 * B * Cin * Cout * k^3 * V_in``;
- backward costs the same again for the weight gradient and again for the input gradient (the latter is not
  computed for a layer whose input needs no gradient, i.e. the first layer), so a training step is 3x forward.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn`` runs, counted by ``FlopCounterMode`` (compiled modules run eagerly meanwhile).

    Args:
        fn: a callable running the work to count (e.g. one training step).

    Returns:
        The total FLOP count (multiply and add counted separately).
    """
    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        # per-module attribution hooks every module's inputs for backward, which breaks torch.autograd.grad with
        # respect to a leaf input (the R1 penalty of the GAN discriminators); only the global total is needed
        counter.mod_tracker = _GlobalOnly()
    with eager_modules(), counter:
        fn()
    return int(counter.get_total_flops())


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every count goes to ``Global``."""

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


@contextlib.contextmanager
def eager_modules():
    """Run ``torch.compile``-d modules eagerly inside the block (the counter sees no compiled graphs)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:
        yield
        return
    with set_stance("force_eager"):
        yield


def conv3d_flops(
    cin: int, cout: int, kernel: int, voxels: int, *, batch: int = 1, groups: int = 1, training: bool = False,
    input_grad: bool = True,
) -> int:  # fmt: skip
    """Closed-form FLOPs of one 3D convolution (``voxels``: output voxels; input voxels for a transposed one).

    Args:
        cin, cout: channels in and out.
        kernel: cubic kernel size k (k^3 weights per channel pair).
        voxels: output voxels of a convolution, input voxels of a transposed convolution.
        batch: batch size.
        groups: convolution groups.
        training: forward + backward instead of forward only.
        input_grad: whether backward computes the input gradient (False for a network's first layer).

    Returns:
        FLOPs (2 per multiply-accumulate).
    """
    forward = 2 * batch * (cin // groups) * cout * kernel**3 * voxels
    if not training:
        return forward
    return forward * (3 if input_grad else 2)


def _down(sizes: Sequence[int], stride: int) -> tuple[int, ...]:
    return tuple(-(-s // stride) for s in sizes)  # kernel 3, padding 1: ceil(n / stride)


def unet_training_flops(
    shape: Sequence[int],
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int,
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    batch: int = 1,
    kernel: int = 3,
) -> int:
    """Closed-form FLOPs of one training step (forward + backward) of MONAI's ``UNet`` with residual units.

    The layer list follows the network's definition: per level a strided residual unit with ``num_res_units``
    convolutions and a strided k^3 residual convolution; a stride-1 bottom unit (1x1 residual convolution when
    the width changes); per level on the way up a strided transposed convolution of (skip + deeper) channels
    followed by a one-convolution residual unit. Input voxels must be divisible by the total stride.

    Args:
        shape: input (X, Y, Z).
        channels / strides / num_res_units: as given to ``monai.networks.nets.UNet`` (``num_res_units >= 1``).
        in_channels / out_channels: image and class channels.
        batch: batch size.
        kernel: kernel size of every convolution (MONAI's default 3, also for the up path).

    Returns:
        FLOPs of one training step (the first layers get no input gradient).
    """
    sizes = [tuple(shape)]
    for s in strides:
        sizes.append(_down(sizes[-1], s))
    vox = [math.prod(s) for s in sizes]
    total = 0

    def conv(cin: int, cout: int, k: int, v: int, first: bool = False) -> None:
        nonlocal total
        total += conv3d_flops(cin, cout, k, v, batch=batch, training=True, input_grad=not first)

    def residual_unit(cin: int, cout: int, v_out: int, strided: bool, subunits: int, first: bool = False) -> None:
        conv(cin, cout, kernel, v_out, first)
        for _ in range(subunits - 1):
            conv(cout, cout, kernel, v_out)
        if strided or cin != cout:
            conv(cin, cout, kernel if strided else 1, v_out, first)

    cin = in_channels
    for level, c in enumerate(channels[:-1]):
        residual_unit(cin, c, vox[level + 1], True, num_res_units, first=level == 0)
        cin = c
    residual_unit(channels[-2], channels[-1], vox[-1], False, num_res_units)
    deepest = len(strides) - 1
    for level in reversed(range(len(strides))):
        upc = channels[level] + channels[level + 1] if level == deepest else 2 * channels[level]
        outc = out_channels if level == 0 else channels[level - 1]
        conv(upc, outc, kernel, vox[level + 1])  # transposed: counted per input voxel
        residual_unit(outc, outc, vox[level], False, 1)
    return total


def network_step_flops(net: torch.nn.Module, input_shape: Sequence[int], device: str = "meta") -> int:
    """Counted FLOPs of forward + backward of ``net`` on one input (a sum as the loss; losses add no counted FLOPs).

    On the ``meta`` device no memory is allocated and nothing is computed, so paper-sized networks can be counted
    on any machine.

    Args:
        net: the network (moved to ``device``; build it under ``torch.device("meta")`` for large shapes).
        input_shape: (B, C, X, Y, Z).
        device: where to run it.

    Returns:
        The counted FLOPs.
    """
    net = net.to(device)
    x = torch.zeros(tuple(input_shape), device=device)

    def step() -> None:
        net(x).float().sum().backward()

    return count_flops(step)
