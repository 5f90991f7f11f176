"""Fixtures of the reliability tests: the test-only method/dataset registered in-process, fast CLI processes."""

from __future__ import annotations

import pytest
import rel_support
import torch


@pytest.fixture
def fakes():
    """``_rel_fake`` and ``_rel_blobs`` registered for the duration of a test."""
    threads = torch.get_num_threads()
    rel_support.register()
    yield
    rel_support.unregister()
    torch.set_num_threads(threads)  # cells set it; leave other tests as they were


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    """:class:`rel_support.CliProcesses` shared by the session (one forkserver)."""
    root = tmp_path_factory.mktemp("cli")
    return rel_support.CliProcesses(root / "logs", root)
