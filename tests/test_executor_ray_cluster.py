"""Ray beyond one raylet: a two-node cluster (two raylets, two object stores) on this machine.

``ray.cluster_utils.Cluster`` starts a head and a second node with one CPU each, so two
concurrent tasks must run on different nodes and the shared plan and data must travel
between object stores. The driver joins it by address, as ``--ray HEAD:PORT`` does (the CLI
is run against it too). Slow: starting two nodes takes a while.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL

from mpcompile.execution import SequentialExecutor, open_executor
from mpcompile.ir import serde
from mpcompile.pipeline import as_graph, calibrate, open_data
from mpcompile.planning.auto import auto_plan
from mpcompile.planning.sensitivity import local_sensitivity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mpcompile[ray]')")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    two = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    two.add_node(num_cpus=1)
    two.wait_for_nodes()
    try:
        yield two
    finally:
        if ray.is_initialized():
            ray.shutdown()
        two.shutdown()


def _results(executor):
    calibrated = calibrate(MNIST, MNIST_CALIB, progress=False)
    plan = calibrated.plan
    layers = [(s.node, s.sqnr_db) for s in local_sensitivity(plan, open_data(plan, MNIST_CALIB), executor=executor)]
    graph = as_graph(MNIST)
    auto = auto_plan(graph, calibrated.stats, calibrated.config, open_data(graph, MNIST_EVAL), metric="cosine",
                     max_drop=1e-5, samples=200, executor=executor)
    return layers, serde.plan_hash(auto.plan), [r.to_dict() for r in auto.rows]


def test_two_nodes_give_the_sequential_results(cluster):
    import ray

    sequential = _results(SequentialExecutor())
    with open_executor(ray=cluster.address) as ex:
        assert ex.kind == "ray" and ex.workers == 2
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        assert _results(ex) == sequential
    assert not ray.is_initialized()  # the executor joined the cluster, so it leaves it; the cluster runs on


def test_the_cli_joins_a_cluster_by_address(cluster, tmp_path):
    outputs = []
    for extra in ([], ["--ray", cluster.address]):
        path = tmp_path / f"s{len(outputs)}.json"
        result = subprocess.run(
            [sys.executable, "-m", "mpcompile", "sensitivity", str(MNIST), "--data", str(MNIST_CALIB), "--quiet",
             "--json", str(path), *extra],
            capture_output=True, text=True, timeout=600, env={**os.environ},
        )
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(path.read_text()))
    assert outputs[0] == outputs[1]
