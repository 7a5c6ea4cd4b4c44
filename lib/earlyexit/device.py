"""Where tensors live: one ``device`` choice ("auto": CUDA, else MPS, else CPU) for training,
evaluation, cached outputs and the real early exit, and what a run records about it.

The CPU path is the same code as the accelerator path: images stay uint8 on the chosen device and are
cropped, flipped and normalised there; random numbers come from CPU generators, so CPU results do not
depend on this module and every device sees the same shuffles and augmentations.
"""
from __future__ import annotations

import contextlib
import platform
import warnings

import torch

__all__ = ["resolve_device", "set_default_device", "default_device", "default_description", "bf16_supported",
           "channels_last_trains", "autocast", "cpu_model", "describe_device", "synchronize", "maybe_compile"]

_default = "auto"   # the notebooks' ``device`` parameter, set by notebook.start
_bf16 = False       # the notebooks' ``bf16`` parameter (trainings in bf16 autocast), set with it


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; anything else is checked and returned."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available here")
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} asked for, but MPS is not available here")
    return chosen


def set_default_device(device: str | torch.device, bf16: bool = False) -> torch.device:
    """Where trainings and evaluations run unless told otherwise (checked at once), and whether the
    notebook trains in bf16 autocast (recorded in its metrics file by ``default_description``)."""
    global _default, _bf16
    chosen = resolve_device(device)
    _default, _bf16 = device, bool(bf16)
    return chosen


def default_device() -> torch.device:
    return resolve_device(_default)


def default_description() -> dict:
    """``describe_device`` of the default device, with bf16 where the notebook asked for it and the
    device supports it."""
    device = default_device()
    return describe_device(device, _bf16 and bf16_supported(device))


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast is fast here: CUDA with bf16 support, or a CPU with bf16 instructions
    (AVX512-BF16 or AMX). oneDNN also runs bf16 on plain AVX-512 by conversion, but there it is slower than
    float32: a VGG-13 x0.5 training step took 2.0x as long in bf16 autocast as in float32 (Intel Xeon
    @ 2.80GHz, AVX-512 without bf16, one thread), so such a CPU trains in float32."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
            return bool(native and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def channels_last_trains(device: torch.device | str = "cpu") -> bool:
    """Whether training in channels_last is safe here. On an x86 CPU without AVX-512, oneDNN's AVX2 kernel
    for the weight gradient of a 1x1 convolution in channels_last (torch 2.14.1,
    ``jit_avx2_1x1_convolution_bwd_weights_t``) writes past its buffer: a 1x1 stride-2 convolution from 4
    to 8 channels on 32x32 maps, batch 64, aborts with "free(): invalid next size" (ResNet-18 x0.0625's
    first shortcut). There a channels_last training runs in the default layout instead; inference in
    channels_last is unaffected."""
    device = resolve_device(device)
    if device.type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device, bf16: bool = False) -> dict:
    """What a metrics file or training history records about where it ran."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = cpu_model()
    else:
        name = device.type
    return {"device": str(device), "device_name": name, "dtype": "bf16 autocast" if bf16 else "float32",
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def synchronize() -> None:
    """Wait for the work queued on an accelerator, so that a wall-clock timing covers it (kernels run
    asynchronously on CUDA and MPS; on a CPU-only machine this does nothing)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        torch.mps.synchronize()


def maybe_compile(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """torch.compile when asked and available; otherwise the module itself, with a warning."""
    if not enabled:
        return module
    try:
        return torch.compile(module)
    except Exception as exc:  # compilers missing on this platform: run eagerly
        warnings.warn(f"torch.compile unavailable ({exc.__class__.__name__}: {exc}); running eagerly")
        return module
