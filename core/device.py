"""Choosing where and at what precision the network runs.

Devices and precisions are named by strings (``cpu``, ``cuda:0``; ``fp32``, ``bf16``, ``fp16``) so
that the base install, which runs on the CPU through OpenVINO, decides all of it without PyTorch;
GPUs need the ``torch`` extra, and only asking for one (or ``auto`` where PyTorch is installed)
imports it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .torch_extra import require_torch, torch_installed

PRECISIONS = ("fp32", "fp16", "bf16")


class DeviceError(ValueError):
    """The requested device or precision cannot be used on this machine."""


@dataclass(frozen=True)
class Device:
    """A compute device by name: ``type`` is cpu, cuda or mps; ``index`` the GPU's number, if given."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def torch(self) -> Any:
        """The same device as a ``torch.device`` (needs PyTorch)."""
        return require_torch(f"device {self}").device(str(self))


CPU = Device("cpu")


def resolve_device(device: Any = "auto") -> Device:
    """``auto`` prefers CUDA, then Apple's MPS (both through PyTorch, where installed), then the CPU."""
    if isinstance(device, Device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if not torch_installed():
            return CPU
        import torch

        if torch.cuda.is_available():
            return Device("cuda")
        return Device("mps") if _mps_available() else CPU
    if name == "cpu":
        return CPU
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda") or name == "mps":
        if not torch_installed():
            raise DeviceError(f"device {device!r} needs PyTorch's GPU support: pip install 'fbcnn-plugins[torch]'")
        import torch
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but this PyTorch build sees no CUDA GPU")
        try:
            parsed = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return Device("cuda", parsed.index)
    if name == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' requested but Apple's Metal backend is not available here")
        return Device("mps")
    raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_precision(precision: str | None, device: Device) -> str:
    """``None`` or ``auto``: the fastest precision this device computes natively (:func:`default_precision`);
    fp32, fp16 and bf16 on request (bf16 works on every CPU, emulated where the hardware lacks it)."""
    device = resolve_device(device)
    if precision is None or precision.strip().lower() == "auto":
        return default_precision(device)
    name = precision.strip().lower()
    if name not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16")
    if name == "bf16" and device.type == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise DeviceError("bf16 requested but this GPU does not support it; use fp16")
    if name == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use bf16 or fp32")
    return name


def precision_name(precision: Any) -> str:
    """``fp32``, ``fp16`` or ``bf16`` for a precision name or a torch dtype (how the CLI and benchmarks name it)."""
    if isinstance(precision, str):
        return precision
    return {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}[str(precision)]


def torch_dtype(precision: str) -> Any:
    """The torch dtype of a precision name (needs PyTorch)."""
    torch = require_torch(f"precision {precision} on PyTorch")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision_name(precision)]


def default_precision(device: Any, flags: frozenset[str] | None = None) -> str:
    """The precision used when none is asked for: the fastest one whose quality loss was measured small.

    bf16 loses at most a few hundredths of a dB against fp32 on the validation set (see
    docs/benchmarks.md) and roughly doubles the speed where the hardware computes it:
    CPUs with AVX-512-BF16 or AMX (``flags`` from cpuinfo, read when not given) and CUDA GPUs
    with bf16 (Ampere and later).  Older CUDA GPUs with tensor cores (Volta, Turing) get
    fp16; a CPU without bf16 instructions would emulate it many times slower than fp32, and
    GPUs before Volta compute fp16 no faster, so those keep fp32, as do Apple's MPS and Arm CPUs,
    where the loss and gain were never measured.
    """
    device = resolve_device(device)
    if device.type == "cpu":
        return "bf16" if native_bf16_from_flags(cpu_flags() if flags is None else flags) else "fp32"
    if device.type == "cuda":
        import torch

        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16"
        major, _ = torch.cuda.get_device_capability(device.torch())
        return "fp16" if major >= 7 else "fp32"
    return "fp32"


#: cpuinfo flags of x86 instructions that compute bf16 products in hardware.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def native_bf16_from_flags(flags: frozenset[str] | set[str]) -> bool:
    """Whether a CPU with these cpuinfo flags computes bf16 in hardware (AVX-512-BF16 or AMX-BF16)."""
    return bool(BF16_CPU_FLAGS & set(flags))


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from Linux's /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512-BF16 or AMX; read from Linux's cpuinfo).

    Without it PyTorch emulates bf16 on the CPU, many times slower than fp32; with it bf16 is
    the faster choice.  Where cpuinfo does not say (macOS, Windows) or names no such x86
    extension (Arm CPUs), this says False and fp32 stays the pick.
    """
    return native_bf16_from_flags(cpu_flags())
