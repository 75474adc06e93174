"""Fixtures for the method tests."""

import os

import pytest
import torch

# Torch's intra-op thread count for these tests; TYMPAN_TEST_THREADS=2 reruns them on another
# set of CPU kernels (the learning tests' verdicts must hold at both, docs/methods.md).
THREADS = int(os.environ.get("TYMPAN_TEST_THREADS", "1"))


@pytest.fixture(autouse=True, scope="module")
def pinned_torch_threads():
    # Two intra-op threads on two shared cores thrash; one is several times faster here.
    n = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(n)
