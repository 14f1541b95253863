"""The one place a compute-device string becomes a `torch.device` (docs/architecture.md).

The command line (``--device``), the rig file (``compute.device``) and the model
server all pass their string here, so "auto", "cpu", "cuda" and "cuda:N" mean the
same thing everywhere, and a request for a GPU that is not there fails loudly
instead of silently running on the CPU.
"""

from __future__ import annotations

import re

import torch

from closedloop.errors import ClosedLoopError
from closedloop.wording import counted

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")

_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """Turn a device request into a concrete `torch.device`.

    Parameters
    ----------
    spec
        ``"auto"`` (or ``None``): the first CUDA GPU when one is available, else the
        CPU.  ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: exactly that device.  A
        `torch.device` is checked the same way.

    Returns
    -------
    torch.device
        Always with an explicit index for CUDA (``cuda:0`` rather than ``cuda``), so
        that it can be recorded and compared.

    Raises
    ------
    ClosedLoopError
        The string is not one of the accepted forms, or a CUDA device was requested
        and is not present.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec is None:
        spec = "auto"
    if not isinstance(spec, str):
        raise ClosedLoopError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:0', got {spec!r}")
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda":
        index = 0
    else:
        match = _CUDA_INDEX.match(text)
        if match is None:
            raise ClosedLoopError(
                f"unknown device {spec!r}: use one of 'auto', 'cpu', 'cuda' or 'cuda:N' (N = GPU index, e.g. 'cuda:1')"
            )
        index = int(match.group(1))
    if not torch.cuda.is_available():
        raise ClosedLoopError(
            f"--device {spec} was requested but no CUDA GPU is available "
            "(torch.cuda.is_available() is False); use --device cpu or auto"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise ClosedLoopError(
            f"--device {spec} was requested but only {count} CUDA GPU(s) are visible "
            f"(indices 0..{count - 1}); pick one of those or use --device auto"
        )
    return torch.device("cuda", index)


def describe_device(device: torch.device | str) -> str:
    """A one-line human description of a device for reports and checkpoints.

    Examples: ``"cpu (2 threads, torch 2.13.0+cpu)"``,
    ``"cuda:0 (NVIDIA H200, 139.8 GiB, torch 2.11.0+cu130)"``.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        memory_gib = props.total_memory / 2**30
        return f"cuda:{index} ({props.name}, {memory_gib:.1f} GiB, torch {torch.__version__})"
    if device.type == "cpu":
        return f"cpu ({counted(torch.get_num_threads(), 'thread')}, torch {torch.__version__})"
    return f"{device} (torch {torch.__version__})"
