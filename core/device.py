"""Choosing where and at what precision the network runs."""

from __future__ import annotations

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class DeviceError(ValueError):
    """The requested device or precision cannot be used on this machine."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU; explicit names must exist."""
    if isinstance(device, torch.device):
        device = str(device)
    name = device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but this PyTorch build sees no CUDA GPU")
        parsed = torch.device(name)
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return parsed
    if name == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' requested but Apple's Metal backend is not available here")
        return torch.device("mps")
    raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype:
    """fp32 by default; fp16 and bf16 on request (bf16 works on the CPU too)."""
    if precision is None:
        return torch.float32
    try:
        dtype = PRECISIONS[precision.lower()]
    except KeyError:
        raise DeviceError(f"unknown precision {precision!r}; use fp32, fp16 or bf16") from None
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("bf16 requested but this GPU does not support it; use fp16")
    if dtype == torch.float16 and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use bf16 or fp32")
    return dtype


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512-BF16 or AMX; read from Linux's cpuinfo).

    Without it PyTorch emulates bf16 on the CPU, many times slower than fp32; with it bf16 can
    be the faster choice.  Where cpuinfo does not say (macOS, Windows) or names no such x86
    extension (Arm CPUs), this says False and fp32 stays the pick.
    """
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
