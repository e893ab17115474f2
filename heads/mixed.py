"""bf16 products over fp32 master weights without a weight-sized allocation per step.

Under `torch.autocast` every step casts each fp32 weight to a fresh bf16 copy, and its backward makes a fresh bf16
weight gradient and a fresh fp32 copy of it; the reference paper's L1 term (mean |w| per matrix) adds three more
weight-sized temporaries. For the paper's MLP (55M weights) that is ~1 GB of new memory a step, and glibc serves
blocks over 32 MB with fresh mappings that the kernel page-faults and zero-fills each time: on 2 cores an epoch
over VQAv2 took 891 s, of which most was page faults (with glibc's thresholds raised it was 396 s, at twice the
peak memory). Here each weight matrix gets, once per fit, a bf16 copy (refreshed in place before each forward) and
a bf16 buffer its gradient product is written into; `F.linear` on those matrices is routed through them, and the
L1 gradient is added in place. Same products (the same bf16 GEMMs autocast would run), no per-step allocation
the size of a weight (the paper's MLP on VQAv2, 2 cores: 328 s an epoch, 1.75x its bound, peak 5.69 GiB).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


class _MasterLinear(torch.autograd.Function):
    """y = x W^T + b in bf16 with W's bf16 copy; backward writes W's gradient into the master's fp32 .grad."""

    @staticmethod
    def forward(ctx, x, shadow, bias, slot):
        ctx.save_for_backward(x, shadow)
        ctx.slot = slot
        return torch.mm(x, shadow.t()) if bias is None else torch.addmm(bias, x, shadow.t())

    @staticmethod
    def backward(ctx, grad):
        x, shadow = ctx.saved_tensors
        slot = ctx.slot
        grad = grad.to(shadow.dtype)
        torch.mm(grad.t(), x, out=slot.buffer)
        _add_converted(slot.master.grad, slot.buffer)
        grad_x = torch.mm(grad, shadow) if ctx.needs_input_grad[0] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, None, grad_bias, None


CHUNK = 1 << 22
"""Elements per step of a mixed-dtype in-place add: its fp32 temporary (16 MB) stays under glibc's mmap threshold,
so it is reused instead of page-faulted anew."""


def _add_converted(out: torch.Tensor, other: torch.Tensor, alpha: float = 1.0) -> None:
    """out += alpha * other, `other` in another dtype, a chunk of rows at a time."""
    rows = max(1, CHUNK // max(1, out.shape[-1]))
    for start in range(0, len(out), rows):
        out[start:start + rows].add_(other[start:start + rows], alpha=alpha)


class _Slot:
    """One weight matrix's master (fp32 Parameter), its bf16 copy and its bf16 product buffer."""

    def __init__(self, master: nn.Parameter, dtype: torch.dtype | None) -> None:
        self.master = master
        self.shadow = None if dtype is None else torch.empty_like(master, dtype=dtype, requires_grad=True)
        self.buffer = None if dtype is None else torch.empty_like(master, dtype=dtype)
        if master.grad is None:
            master.grad = torch.zeros_like(master)


class _Routed(TorchFunctionMode):
    def __init__(self, slots: dict[int, _Slot]) -> None:
        super().__init__()
        self.slots = slots

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            slot = self.slots.get(id(weight))
            if slot is not None and slot.shadow is not None:
                dtype, rows = slot.shadow.dtype, x.reshape(-1, x.shape[-1]).to(slot.shadow.dtype)
                y = _MasterLinear.apply(rows, slot.shadow, None if bias is None else bias.to(dtype), slot)
                return y.reshape(*x.shape[:-1], y.shape[-1])
        return func(*args, **kwargs)


class MasterWeights:
    """The weight matrices of one member in training: their bf16 copies (bf16=True) and gradient buffers.

    Use per step: `zero_grad()`, then the forward and backward inside `routed()`, then `add_l1(...)` / `add_l2(...)`
    before the optimiser's step. With bf16=False the products stay fp32 (no routing, no copies).
    A matrix used other than through F.linear still gets its gradient from autograd (every gradient is zeroed).
    """

    def __init__(self, net: nn.Module, matrices: list[torch.Tensor], bf16: bool) -> None:
        self.net = net
        dtype = torch.bfloat16 if bf16 else None
        self.slots = {id(w): _Slot(w, dtype) for w in matrices}
        self.bf16 = bf16

    def zero_grad(self) -> None:
        """Zero every gradient (kept allocated) and refresh the bf16 copies from the masters."""
        for p in self.net.parameters():
            if p.grad is not None:
                p.grad.zero_()
        for slot in self.slots.values():
            if slot.shadow is not None:
                with torch.no_grad():
                    slot.shadow.copy_(slot.master)

    def routed(self):
        """Context in which F.linear on these matrices runs on their bf16 copies (nothing happens with fp32)."""
        return _Routed(self.slots) if self.bf16 else _nothing()

    @torch.no_grad()
    def add_l1(self, strength: float) -> None:
        """grad += strength * d/dw mean|w| = strength * sign(w) / numel, per matrix, in place (the signs a chunk of
        rows at a time, so their buffer stays small and is reused)."""
        for slot in self.slots.values():
            w, grad = slot.master, slot.master.grad
            rows = max(1, CHUNK // max(1, w.shape[-1]))
            for start in range(0, len(w), rows):
                grad[start:start + rows].add_(torch.sign(w[start:start + rows]), alpha=strength / w.numel())

    @torch.no_grad()
    def add_l2(self, coefficient: float) -> None:
        """grad += d/dw coefficient * sum(w^2)."""
        for slot in self.slots.values():
            slot.master.grad.add_(slot.master, alpha=2.0 * coefficient)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
