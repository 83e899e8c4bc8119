"""The two implementations of ``StepContext`` behind ``benchmark.engine.fit``.

``TorchContext`` steps plain PyTorch optimizers (averaging gradients over ranks itself when there is more than
one process). ``DeepSpeedContext`` wraps every trained network in its own DeepSpeed engine, built around the
optimizer and scheduler the model makes, so a GAN has one engine for G and one for D.

Both also save and restore the network/optimizer part of a checkpoint (``save_state``/``load_state``); the
rest of the checkpoint (step, RNG, extras) is written by ``benchmark.engine.checkpoint``.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.config import TrainConfig
from benchmark.engine import distributed
from benchmark.engine.contract import Trainable
from benchmark.errors import CheckpointError, ConfigError

_REPO_ROOT = Path(__file__).resolve().parents[2]


class _Context:
    """What both back-ends share: devices, the per-step generator, freezing."""

    kind = "base"
    ranks = 1  # set by the engine for a multi-rank job (``StepContext.ranks``)
    skips_nonfinite = False  # whether a step with a non-finite loss is skipped (fp16 scalers) rather than fatal

    def __init__(self, model: Trainable, steps_per_net: dict[str, int], device: torch.device):
        self.device = device
        self.skipped: dict[str, int] = {}  # updates skipped for inf/NaN gradients, per network (grad scalers)
        self.step = 0
        self.generator = torch.Generator(device=device)
        self.nets = model.networks
        self.trained = list(steps_per_net)
        # the model may have frozen some parameters itself; unfreezing restores those flags, never more
        self._flags = {n: [p.requires_grad for p in net.parameters()] for n, net in self.nets.items()}

    def module(self, name: str) -> nn.Module:
        return self.nets[name]

    def unwrapped(self, name: str) -> nn.Module:
        return self.nets[name]

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_mean(value.detach().clone())

    def penalty_grad(self, name: str, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return penalty_grad(None, output, inputs)

    def set_requires_grad(self, name: str, flag: bool) -> None:
        for p, initial in zip(self.nets[name].parameters(), self._flags[name], strict=True):
            p.requires_grad_(flag and initial)

    def _trainable_params(self, name: str) -> list[nn.Parameter]:
        return [p for p, f in zip(self.nets[name].parameters(), self._flags[name], strict=True) if f]

    def finish(self) -> None:
        """Leave every network as a float32 module in eval mode, ready for sampling."""
        for net in self.nets.values():
            net.float().eval()


class TorchContext(_Context):
    """Plain PyTorch: one optimizer (+ scheduler, + grad scaler for fp16) per trained network."""

    kind = "torch"

    def __init__(
        self, model: Trainable, steps_per_net: dict[str, int], train: TrainConfig, device: torch.device, world: int
    ):
        super().__init__(model, steps_per_net, device)
        self.world = world
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        for name, total in steps_per_net.items():
            opt, sched = model.make_optimizer(name, self._trainable_params(name), total)
            self.optimizers[name], self.schedulers[name] = opt, sched
        use_scaler = train.precision == "fp16"
        self.scalers = {n: torch.amp.GradScaler(device.type) for n in steps_per_net} if use_scaler else {}
        self.skipped = dict.fromkeys(self.scalers, 0)
        self.skips_nonfinite = use_scaler
        if world > 1:  # every rank starts from rank 0's weights, as DeepSpeed does
            for net in self.nets.values():
                for t in list(net.parameters()) + list(net.buffers()):
                    distributed.broadcast_(t.data)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        if name in self.scalers:
            loss = self.scalers[name].scale(loss)
        loss.backward()

    def penalty_grad(self, name: str, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return penalty_grad(self.scalers.get(name), output, inputs)

    def optimizer_step(self, name: str) -> None:
        opt = self.optimizers[name]
        if self.world > 1:  # before the scaler looks at them: every rank finds the same inf/NaN and skips alike
            all_reduce_grads(list(self.nets[name].parameters()))
        if name in self.scalers:
            scaler = self.scalers[name]
            scale = scaler.get_scale()
            scaler.step(opt)  # skips the update when a gradient is inf/NaN...
            scaler.update()
            if scaler.get_scale() < scale:  # ...and then lowers the scale: that is how a skip shows
                self.skipped[name] += 1
        else:
            opt.step()
        if self.schedulers[name] is not None:
            with warnings.catch_warnings():  # the schedule follows the steps, also one whose update was skipped
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
                self.schedulers[name].step()
        opt.zero_grad(set_to_none=True)

    def save_state(self, folder: Path) -> dict[str, Any]:
        return {
            "networks": {n: net.state_dict() for n, net in self.nets.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() if s is not None else None for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "skipped": dict(self.skipped),
        }

    def load_state(self, folder: Path, state: dict[str, Any]) -> None:
        for n, net in self.nets.items():
            net.load_state_dict(state["networks"][n])
        for n, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][n])
            if self.schedulers[n] is not None:
                self.schedulers[n].load_state_dict(state["schedulers"][n])
        for n, scaler in self.scalers.items():
            scaler.load_state_dict(state["scalers"][n])
        self.skipped.update({n: int(c) for n, c in state.get("skipped", {}).items() if n in self.skipped})


def penalty_grad(scaler: torch.amp.GradScaler | None, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The gradient of ``output.sum()`` with respect to ``inputs``, with its graph, for a gradient penalty (R1).

    Under fp16 this is PyTorch's gradient-penalty recipe for ``GradScaler``: the gradient is taken of the output
    scaled by the network's scaler (small fp16 gradients would otherwise flush to zero) and divided by the scale
    before it is returned, so the caller's norm is computed on true values (under autocast, as the step runs);
    an overflow gives inf, which makes the penalised loss non-finite and the scaler skip that update.

    Args:
        scaler: the penalised network's grad scaler; None (fp32, bf16, DeepSpeed) takes the plain gradient.
        output: the network's output (e.g. the discriminator's logits on real images).
        inputs: the tensor the gradient is taken with respect to (``requires_grad=True``).

    Returns:
        The unscaled gradient, shaped like ``inputs``, differentiable (``create_graph=True``).
    """
    if scaler is None:
        (grad,) = torch.autograd.grad(output.sum(), inputs, create_graph=True)
        return grad
    (scaled,) = torch.autograd.grad(scaler.scale(output.sum()), inputs, create_graph=True)
    return scaled / scaler.get_scale()


def all_reduce_grads(params: list[torch.nn.Parameter], bucket_bytes: int = 25 * 2**20) -> None:
    """Average the gradients of ``params`` over ranks, a few flat buckets at a time rather than one call per tensor.

    Over gloo each collective costs a round trip, so per-parameter all-reduces dominate a small network's step.
    The buckets are laid out over every parameter that requires a gradient (the same on all ranks: same model,
    same stage), not over those that got one, so a branch one rank did not use cannot shift the layout: a missing
    gradient counts as zeros (as in DDP), and a flag per parameter, reduced in the same buckets, leaves it None
    only where no rank had one.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    tensors = [*grads, present]
    bucket: list[torch.Tensor] = []
    size = 0
    for i, t in enumerate(tensors):
        bucket.append(t)
        size += t.numel() * t.element_size()
        last = i + 1 == len(tensors)
        if last or size >= bucket_bytes or tensors[i + 1].dtype != t.dtype or tensors[i + 1].device != t.device:
            flat = distributed.all_reduce_mean(torch.cat([g.reshape(-1) for g in bucket]))
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            bucket, size = [], 0
    for p, grad, anywhere in zip(params, grads, present.tolist(), strict=True):
        p.grad = grad if anywhere > 0 else None


def _find_json(path_str: str) -> Path:
    path = Path(path_str)
    for candidate in (path, _REPO_ROOT / path):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"train.deepspeed_config: {path_str}: file not found (also looked under {_REPO_ROOT})")


def deepspeed_config(train: TrainConfig, world: int) -> dict[str, Any]:
    """The DeepSpeed config dict: ``train.deepspeed_config`` with ZeRO stage, precision and batch filled in.

    Args:
        train: engine settings; ``zero_stage`` (if set), ``precision`` and ``batch_size`` override the JSON.
        world: number of ranks (the global batch is ``batch_size * world``).

    Returns:
        A dict for ``deepspeed.initialize(config=...)``. Raises ``ConfigError`` naming the file or key.
    """
    path = _find_json(train.deepspeed_config)
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"train.deepspeed_config: {path}: not valid JSON ({exc})") from None
    for key in ("optimizer", "scheduler"):
        if key in cfg:
            raise ConfigError(f"{path}: remove the {key!r} section; optimizers and schedulers come from the model")
    zero = cfg.setdefault("zero_optimization", {})
    if train.zero_stage is not None:
        zero["stage"] = train.zero_stage
    if zero.get("stage", 0) not in (0, 1, 2):
        raise ConfigError(
            f"train.zero_stage: {zero.get('stage')} is not supported (0, 1 or 2): ZeRO-3 partitions the "
            "parameters, which sampling from the plain modules after training cannot use"
        )
    for key in ("bf16", "fp16", "torch_autocast"):
        cfg.pop(key, None)
    if train.precision != "fp32":
        # autocast keeps fp32 weights in the modules: DeepSpeed's bf16/fp16 sections cast whole modules, which
        # breaks batch norm under autocast and leaves half-precision modules behind for sampling
        cfg["torch_autocast"] = {"enabled": True, "dtype": {"bf16": "bfloat16", "fp16": "float16"}[train.precision]}
    cfg["train_micro_batch_size_per_gpu"] = train.batch_size
    cfg["gradient_accumulation_steps"] = 1
    cfg["train_batch_size"] = train.batch_size * world
    cfg.setdefault("steps_per_print", 2**31 - 1)
    cfg.setdefault("zero_allow_untested_optimizer", True)
    return cfg


class _Handle:
    """A trained network as seen by ``train_step``: through its DeepSpeed engine while it has gradients enabled,
    directly while frozen (e.g. D inside the G update).

    DeepSpeed hooks the outputs of an engine's forward and expects that engine's own ``backward`` for every
    backward pass through them (ZeRO-0 with autocast raises otherwise), so a frozen network must be called
    plainly. Deciding at call time keeps a handle fetched once per step valid across ``set_requires_grad``.
    Other attributes (``encode``, ``decode``, ...) are the plain module's.
    """

    def __init__(self, ctx: DeepSpeedContext, name: str):
        self._ctx, self._name = ctx, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = self._ctx
        target = ctx.engines[self._name] if ctx.grad_on[self._name] else ctx.nets[self._name]
        return target(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._ctx.nets[self._name], attr)


class DeepSpeedContext(_Context):
    """One ``deepspeed.initialize`` per trained network, each with the model's own optimizer and scheduler."""

    kind = "deepspeed"

    def __init__(
        self, model: Trainable, steps_per_net: dict[str, int], train: TrainConfig, device: torch.device, world: int
    ):
        super().__init__(model, steps_per_net, device)
        import deepspeed  # imported here: it is slow to import and only this back-end needs it

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        cfg = deepspeed_config(train, world)
        self.engines: dict[str, Any] = {}
        for name, total in steps_per_net.items():
            opt, sched = model.make_optimizer(name, self._trainable_params(name), total)
            engine, _, _, _ = deepspeed.initialize(
                model=self.nets[name], optimizer=opt, lr_scheduler=sched, config=copy.deepcopy(cfg)
            )
            self.engines[name] = engine
        self.grad_on = dict.fromkeys(self.nets, True)
        self._handles = {name: _Handle(self, name) for name in self.engines}
        # fp16: DeepSpeed's torch_autocast mode scales the loss with a torch GradScaler (the engine's under ZeRO-0,
        # the ZeRO optimizer's under 1-2), which skips an update with inf/NaN gradients: such a step is skipped and
        # counted as in the torch engine, not fatal
        # (DeepSpeed's autocast set-up is process-global: an fp32 run after an fp16 one in the same process finds a
        # scaler too, which must not make its non-finite losses skippable)
        fp16 = train.precision == "fp16"
        self.scalers = {n: s for n in self.engines if fp16 and (s := self._scaler(n)) is not None}
        self.skipped = dict.fromkeys(self.scalers, 0)
        self.skips_nonfinite = bool(self.scalers)

    def _scaler(self, name: str) -> Any:
        engine = self.engines[name]
        return getattr(engine, "torch_autocast_z0_gradscaler", None) or getattr(
            engine.optimizer, "torch_autocast_gradscaler", None
        )

    def module(self, name: str) -> Any:
        return self._handles.get(name, self.nets[name])

    def set_requires_grad(self, name: str, flag: bool) -> None:
        super().set_requires_grad(name, flag)
        self.grad_on[name] = flag

    def backward(self, name: str, loss: torch.Tensor) -> None:
        self.engines[name].backward(loss)

    def penalty_grad(self, name: str, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return penalty_grad(self.scalers.get(name), output, inputs)

    def optimizer_step(self, name: str) -> None:
        engine, scaler = self.engines[name], self.scalers.get(name)
        before = (engine.skipped_steps, scaler.get_scale() if scaler is not None else None)
        engine.step()
        # a skip shows as DeepSpeed's count (ZeRO's overflow check) or as a lowered scale (ZeRO-0's GradScaler)
        if scaler is not None and (engine.skipped_steps > before[0] or scaler.get_scale() < before[1]):
            self.skipped[name] += 1

    def save_state(self, folder: Path) -> dict[str, Any]:
        for name, engine in self.engines.items():
            engine.save_checkpoint(str(folder), tag=name, save_latest=False)
        frozen = {n: net.state_dict() for n, net in self.nets.items() if n not in self.engines}
        # the fp16 scalers' state is kept here too, whether or not DeepSpeed's own checkpoint holds it
        scalers = {n: sc.state_dict() for n, sc in self.scalers.items()}
        return {"networks": frozen, "scalers": scalers, "skipped": dict(self.skipped)}

    def load_state(self, folder: Path, state: dict[str, Any]) -> None:
        for name, engine in self.engines.items():
            loaded, _ = engine.load_checkpoint(
                str(folder), tag=name, load_optimizer_states=True, load_lr_scheduler_states=True
            )
            if loaded is None:
                raise CheckpointError(folder / name, "DeepSpeed found no checkpoint for this network")
        for n, sd in state["networks"].items():
            self.nets[n].load_state_dict(sd)
        for n, sd in state.get("scalers", {}).items():
            if n in self.scalers:
                self.scalers[n].load_state_dict(sd)
        self.skipped.update({n: int(c) for n, c in state.get("skipped", {}).items() if n in self.skipped})
