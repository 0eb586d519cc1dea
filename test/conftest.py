"""Shared fixtures: tiny models that keep every test fast on a CPU."""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from typing import Iterator

import pytest
import torch

# exports and compiled models of the OpenVINO backend go to a folder of this test run (node
# processes started by the tests inherit it), never to the user's cache
if "SEGPP_CACHE_DIR" not in os.environ:
    os.environ["SEGPP_CACHE_DIR"] = tempfile.mkdtemp(prefix="segpp-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SEGPP_CACHE_DIR"], True)

from segpp_ros.model import MiTSpec, build_model

# Same strides, kernels and spatial-reduction ratios as the real variants, tiny widths.
TINY = MiTSpec("tiny", widths=(8, 16, 24, 32), depths=(1, 1, 1, 1), heads=(1, 2, 3, 4))
TINY2 = MiTSpec("tiny2", widths=(8, 16, 24, 32), depths=(2, 1, 2, 1), heads=(1, 2, 3, 4))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics so eval-mode folding is exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture
def tiny_seg():
    return randomize_batchnorm(build_model(TINY2, num_classes=5)).eval()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """PyTorch on one thread inside, as the node processes of the tests run: references
    computed here are then bit-identical to their outputs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
