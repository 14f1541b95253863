"""The one device switch: `resolve_device` and `describe_device`."""

from __future__ import annotations

import pytest
import torch

from closedloop.errors import ClosedLoopError
from closedloop.model.device import describe_device, resolve_device


def _pretend_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_cpu_is_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["auto", None])
def test_auto_without_gpu_is_cpu(monkeypatch, spec):
    _pretend_gpus(monkeypatch, 0)
    assert resolve_device(spec) == torch.device("cpu")


def test_auto_with_gpu_is_first_gpu(monkeypatch):
    _pretend_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize("spec,expected", [("cuda", 0), ("cuda:1", 1), ("CUDA:0", 0)])
def test_explicit_gpu_with_gpus(monkeypatch, spec, expected):
    _pretend_gpus(monkeypatch, 2)
    assert resolve_device(spec) == torch.device("cuda", expected)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_explicit_cuda_without_gpu_is_an_error(monkeypatch, spec):
    _pretend_gpus(monkeypatch, 0)
    with pytest.raises(ClosedLoopError, match=f"--device {spec} was requested but no CUDA GPU is available"):
        resolve_device(spec)


def test_gpu_index_out_of_range(monkeypatch):
    _pretend_gpus(monkeypatch, 1)
    with pytest.raises(ClosedLoopError, match="only 1 CUDA GPU"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "cuda:a", "mps0", "", 3])
def test_bad_strings_are_errors(spec):
    with pytest.raises(ClosedLoopError, match="'auto', 'cpu', 'cuda'"):
        resolve_device(spec)


def test_describe_cpu():
    text = describe_device("cpu")
    assert text.startswith("cpu (") and "threads" in text and torch.__version__ in text
