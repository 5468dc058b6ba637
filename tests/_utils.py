"""Helpers shared by the test folders (tests/reference, ops, cuda, nn, cli, cpp)."""

import pytest
import torch

import nvfp4_ops  # noqa: F401  (registers the ops)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def poison_cuda_cache(*like: torch.Tensor) -> None:
    """Make the next CUDA allocations of these sizes come back filled with 0xA5 bytes.

    The ops allocate their outputs; the caching allocator hands back the blocks freed
    last for a request of the same size, so filling blocks of each expected output's
    size and freeing them poisons the outputs of the next call: a byte the kernel does
    not write then fails the exact comparison.
    """
    bufs = []
    for t in like:
        b = torch.empty(t.numel() * t.element_size(), dtype=torch.uint8, device="cuda")
        b.fill_(0xA5)
        bufs.append(b)
    torch.cuda.synchronize()
    del bufs
