"""Numeric precision on the device, declared once for training and serving. Import-light: torch inside functions.

* **Training** (:class:`Precision`, used by ``ml.loop`` for every task type): automatic mixed precision on CUDA --
  bf16 where the GPU runs it natively (:func:`native_bf16`: compute capability 8.0, Ampere, and later; same exponent
  range as fp32, no loss scaling),
  else fp16 with a ``torch.amp.GradScaler`` (fp16's small range would flush small gradients to zero without one);
  fp32 on the CPU (CPU autocast gains nothing for these models and changes the numbers). The ``AMP`` setting
  (``auto`` | ``off``) turns it off. Autocast only changes the dtype of the operations: the parameters, the
  optimizer state, the best-checkpoint copy and the saved files stay fp32.
* **Serving** (:func:`inference_autocast`): fp16 / bf16 (the same choice) on CUDA, nothing on the CPU.
* :func:`to_device`: a batch tensor copied to a CUDA device through pinned memory without blocking the host (the
  copy overlaps the work already queued on the GPU); a plain ``.to`` elsewhere.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any

AMP_SETTINGS = ("auto", "off")


def is_cuda(device: Any) -> bool:
    """Whether ``device`` (``"cuda"``, ``"cuda:1"``, a ``torch.device``) is a CUDA device."""
    return str(device).startswith("cuda")


def amp_dtype(device: Any, amp: str = "auto") -> Any:
    """The autocast dtype for ``device``: ``torch.bfloat16`` on a CUDA device that supports it, else
    ``torch.float16`` on CUDA; None (fp32) on the CPU or when ``amp`` is ``"off"``."""
    if amp not in AMP_SETTINGS:
        raise ValueError(f"AMP must be one of {', '.join(AMP_SETTINGS)}, not {amp!r}")
    if amp == "off" or not is_cuda(device):
        return None
    import torch

    return torch.bfloat16 if native_bf16(str(device)) else torch.float16


@functools.lru_cache(maxsize=None)
def native_bf16(device: str) -> bool:
    """Whether CUDA device ``device`` (``"cuda"``: the current one, ``"cuda:N"``) runs bf16 natively: compute
    capability 8.0 (Ampere) or later. Not ``torch.cuda.is_bf16_supported()``, which (by default, torch 2.x) says
    yes on older GPUs too, where bf16 is emulated: slow, and no better than fp16 with a loss scaler there."""
    import torch

    return torch.cuda.get_device_capability(torch.device(device))[0] >= 8


def dtype_name(dtype: Any) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` (None) -- how metrics and /readyz name a precision."""
    if dtype is None:
        return "fp32"
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def inference_autocast(device: Any):
    """Half precision for a forward pass on CUDA (bf16 where supported, else fp16); a no-op context on the CPU."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda", dtype=dtype)


def to_device(tensor: Any, device: Any) -> Any:
    """``tensor`` on ``device``: through pinned (page-locked) memory and ``non_blocking`` on CUDA, so the host can
    prepare the next batch while the copy runs; a plain ``.to`` on the CPU."""
    if is_cuda(device) and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class Precision:
    """Mixed precision for one training run: the autocast context, the backward pass and the optimizer step.

    ``dtype``: the autocast dtype (None: fp32, every method is then the plain fp32 step). With fp16 the loss is
    scaled before ``backward`` and the gradients unscaled before clipping; a step whose gradients overflowed is
    skipped by the scaler (and the scale lowered), as ``torch.amp`` recommends.
    """

    def __init__(self, device: Any, dtype: Any = None) -> None:
        import torch

        self.device_type = "cuda" if is_cuda(device) else "cpu"
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(self.device_type) if dtype == torch.float16 else None

    @classmethod
    def for_device(cls, device: Any, amp: str = "auto") -> "Precision":
        """The precision :func:`amp_dtype` chooses for ``device`` under the ``AMP`` setting ``amp``."""
        return cls(device, amp_dtype(device, amp))

    @property
    def name(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"fp32"``."""
        return dtype_name(self.dtype)

    def autocast(self):
        """The context a forward pass (and its loss) runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: Any) -> None:
        """``loss.backward()``, the loss scaled first under fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: Any, parameters: Any, max_grad_norm: float) -> bool:
        """Clip the (unscaled) gradients to ``max_grad_norm`` and step ``optimizer``. False when the fp16 scaler
        skipped the step because a gradient overflowed (the next steps run at a lower scale)."""
        import torch

        parameters = list(parameters)
        if self.scaler is None:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
            optimizer.step()
            return True
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scale only drops when the step was skipped
