"""Fixtures shared across test folders, and a hermetic environment for every test."""

from __future__ import annotations

import os

import pytest
import torch

# Variables of the caller's shell that change what the library does (kernel path, timeouts,
# offline mode, a torchrun process group): tests that need one set it themselves.
_AMBIENT_PREFIXES = ("HYBRIDIZE_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_AMBIENT_PREFIXES += ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_")
# CI sets it: a skipped test fails (every test can run there; a silent skip would hide a
# broken import or a missing extra)
NO_SKIPS = "HYBRIDIZE_TEST_NO_SKIPS"


def pytest_configure(config: pytest.Config) -> None:
    for name in list(os.environ):
        if name.startswith(_AMBIENT_PREFIXES) and name != NO_SKIPS:
            del os.environ[name]
    # the first training test would otherwise switch glibc's trimming off for the rest of the
    # worker (retain_freed_memory cannot be undone): memory use would depend on test order
    os.environ["HYBRIDIZE_MALLOC"] = "system"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``HYBRIDIZE_TEST_NO_SKIPS=1`` a run with skipped tests (or modules) fails."""
    if os.environ.get(NO_SKIPS) != "1" or hasattr(session.config, "workerinput"):
        return  # not asked, or an xdist worker (the controller sees every report)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r for r in getattr(reporter, "stats", {}).get("skipped", []) if r.skipped]
    if skipped:
        names = ", ".join(sorted({r.nodeid or str(r.fspath) for r in skipped})[:10])
        print(f"\nerror: {len(skipped)} skipped under {NO_SKIPS}=1: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _no_user_data_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Data sets named without --data-root come from the Debian package or a download into an
    empty cache of the test session, never from the user's ~/.cache (a stale copy there would
    silently stand in for the data a test means)."""
    from hybridize.data import datasets

    monkeypatch.setattr(datasets, "DATA_CACHE", tmp_path_factory.getbasetemp() / "data-cache")


@pytest.fixture(scope="module")
def hybrid_checkpoint(tmp_path_factory):
    """A small has8 resnet10t hybrid saved as a checkpoint (for the CLI tests)."""
    import hybridize

    base = hybridize.create_model("resnet10t", num_classes=4)
    model = hybridize.convert(base, "has8", example_input=torch.rand(1, 3, 16, 16))
    path = tmp_path_factory.mktemp("ckpt") / "r10.safetensors"
    hybridize.save(model, path)
    return path
