"""Mixed precision in one place: bf16 where the GPU has it, fp16 (with loss scaling) where it
does not, full precision on CPUs unless asked."""

import torch


def amp_dtype(device: torch.device, cpu_bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype for `device`, or None for full precision."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16 else None


def autocast(device: torch.device, cpu_bf16: bool = False) -> torch.autocast:
    dtype = amp_dtype(device, cpu_bf16)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling, needed only when autocast runs in fp16 (bf16 has fp32's range)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)
