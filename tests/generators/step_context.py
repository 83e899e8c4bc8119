"""A plain-PyTorch stand-in for the engine's StepContext, shared by the generator unit tests.

It records, for every backward, which networks' parameters received non-zero gradients and which networks were
frozen at that moment, so tests can check update order and freezing without the engine.
"""

from __future__ import annotations

import torch


class RecordingContext:
    """``events``: one ``(network, reached, frozen)`` per backward; ``reached``/``frozen`` map network -> bool."""

    def __init__(self, model, stage, seed: int = 0):
        self.model, self.device, self.step, self.ranks = model, torch.device("cpu"), 0, 1
        self.generator = torch.Generator().manual_seed(seed)
        self.opts, self.events = {}, []
        for name, net in model.networks.items():
            net.requires_grad_(name in stage.networks).train(name in stage.networks)
            if name in stage.networks:
                self.opts[name] = model.make_optimizer(name, list(net.parameters()), 10)

    def module(self, name):
        return self.model.networks[name]

    def unwrapped(self, name):
        return self.model.networks[name]

    def mean_over_ranks(self, value):
        return value

    def penalty_grad(self, name, output, inputs):
        return torch.autograd.grad(output.sum(), inputs, create_graph=True)[0]

    def backward(self, name, loss):
        loss.backward()
        nets = self.model.networks.items()
        reached = {
            n: any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters()) for n, net in nets
        }
        frozen = {n: not any(p.requires_grad for p in net.parameters()) for n, net in nets}
        self.events.append((name, reached, frozen))

    def optimizer_step(self, name):
        opt, sched = self.opts[name]
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    def set_requires_grad(self, name, flag):
        self.model.networks[name].requires_grad_(flag)
