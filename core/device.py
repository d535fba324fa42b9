"""Choosing where and at what precision the network runs."""

from __future__ import annotations

import functools

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
    """``None`` or ``auto``: the fastest precision this device computes natively (:func:`default_precision`);
    fp32, fp16 and bf16 on request (bf16 works on every CPU, emulated where the hardware lacks it)."""
    if precision is None or precision.strip().lower() == "auto":
        return default_precision(device)
    try:
        dtype = PRECISIONS[precision.strip().lower()]
    except KeyError:
        raise DeviceError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16") from None
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("bf16 requested but this GPU does not support it; use fp16")
    if dtype == torch.float16 and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use bf16 or fp32")
    return dtype


def precision_name(dtype: torch.dtype) -> str:
    """``fp32``, ``fp16`` or ``bf16`` for a compute dtype (how the CLI and benchmarks name it)."""
    return next(name for name, value in PRECISIONS.items() if value == dtype)


def default_precision(device: torch.device, flags: frozenset[str] | None = None) -> torch.dtype:
    """The precision used when none is asked for: the fastest one whose quality loss was measured small.

    bf16 loses at most a few hundredths of a dB against fp32 on the validation set (see
    docs/benchmarks.md) and roughly doubles the speed where the hardware computes it:
    CPUs with AVX-512-BF16 or AMX (``flags`` from cpuinfo, read when not given) and CUDA GPUs
    with bf16 (Ampere and later).  Older CUDA GPUs with tensor cores (Volta, Turing) get
    fp16; a CPU without bf16 instructions would emulate it many times slower than fp32, and
    GPUs before Volta compute fp16 no faster, so those keep fp32, as do Apple's MPS and Arm CPUs,
    where the loss and gain were never measured.
    """
    if device.type == "cpu":
        return torch.bfloat16 if native_bf16_from_flags(cpu_flags() if flags is None else flags) else torch.float32
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.bfloat16
        major, _ = torch.cuda.get_device_capability(device)
        return torch.float16 if major >= 7 else torch.float32
    return torch.float32


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
