"""Session set-up and fixtures shared by all tests; helpers live in tests/helpers/."""
import os
import tempfile

import pytest
from harness import USER_CACHE, tiny_cfg  # noqa: F401  (USER_CACHE: read before FRN_DET_CACHE is replaced below)

# One cache per test session (generated dataset, built kernels), never the user's: tests kill
# runs on purpose, also while they build. FRN_DET_TEST_CACHE names a folder to reuse.
os.environ["FRN_DET_CACHE"] = os.environ.get("FRN_DET_TEST_CACHE") or tempfile.mkdtemp(prefix="frn_det_test_cache_")


@pytest.fixture
def tiny_config():
    return tiny_cfg


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real SLURM cluster on this machine (tests/helpers/slurm_cluster.py), for tests marked slurm;
    they skip, saying why, where SLURM cannot run."""
    from slurm_cluster import ClusterUnavailable, SlurmCluster

    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as e:
        cluster.stop()
        pytest.skip(f"no SLURM cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
