"""The executor: sequential, a local process pool and Ray give the same results, report failures by task.

Determinism is checked where it matters: sensitivity numbers and auto plans (``plan_hash``,
Pareto rows) from a sequential run, 2 worker processes and a local Ray (``num_cpus=2``, in
this process; skipped when Ray is not installed), on a generated CNN and on the shipped MNIST.
One process pool and one Ray instance serve the whole module, to keep it fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL

from mpcompile.errors import MpcompileError, PlanError
from mpcompile.execution import (
    ProcessExecutor,
    SequentialExecutor,
    TaskCrash,
    TaskError,
    open_executor,
    threads_per_worker,
    worker_threads,
)
from mpcompile.ir import serde
from mpcompile.ir.quant import QuantSpec
from mpcompile.pipeline import as_graph, calibrate, open_data
from mpcompile.planning.auto import auto_plan
from mpcompile.planning.sensitivity import local_sensitivity


# ============================================================================ task functions (module level: picklable)
def _lookup(value, key):
    return value[key]


def _slow_square(value, i):
    time.sleep(value["delays"][i])
    return i * i


def _who(value, _item):
    from mpcompile.ortsession import session_options

    array = value["array"]
    return os.getpid(), id(value), bool(array.flags.owndata), worker_threads(), session_options().intra_op_num_threads


def _fail_on(value, item):
    if item == value["bad"]:
        raise PlanError(f"item {item} is bad") if value.get("user") else ZeroDivisionError("boom")
    time.sleep(0.05)
    return item


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def pool():
    with ProcessExecutor(2) as ex:
        yield ex


@pytest.fixture(scope="module")
def ray_executor():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mpcompile[ray]')")
    import logging

    started = not ray.is_initialized()
    if started:
        # address="local": a new instance, not whatever cluster another job on this machine runs
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        with open_executor(ray="local") as ex:  # uses the Ray initialized above, leaves it running
            assert ex.kind == "ray" and ex.workers == 2
            yield ex
    finally:
        if started:
            ray.shutdown()


@pytest.fixture(params=["processes", "ray"])
def parallel(request):
    return request.getfixturevalue("pool" if request.param == "processes" else "ray_executor")


# ============================================================================ the executor itself
def test_map_returns_results_in_item_order_whatever_the_completion_order(pool):
    counted = []

    class Bar:
        def advance(self, n):
            counted.append(n)

    delays = [0.3, 0.0, 0.2, 0.0, 0.1, 0.0]  # early items finish last
    shared = pool.share({"delays": delays})
    assert pool.map(_slow_square, shared, list(range(6)), progress=Bar()) == [i * i for i in range(6)]
    assert sum(counted) == 6  # one bar, advanced once per result from either worker
    seq = SequentialExecutor()
    assert seq.map(_slow_square, seq.share({"delays": [0] * 6}), list(range(6))) == [i * i for i in range(6)]


def test_shared_data_reaches_each_worker_once_and_is_not_copied(pool):
    shared = pool.share({"array": np.arange(1 << 20, dtype=np.float32)})
    seen = pool.map(_who, shared, list(range(16)))
    per_worker: dict[int, set[int]] = {}
    for pid, value_id, owns, threads, ort_threads in seen:
        per_worker.setdefault(pid, set()).add(value_id)
        assert not owns  # a view on the memory-mapped file, not a copy
        assert threads == ort_threads == threads_per_worker(2)  # 1 on 2 cores: no oversubscription
    assert all(len(ids) == 1 for ids in per_worker.values())  # loaded once per worker, then cached
    assert os.getpid() not in per_worker
    from mpcompile.ortsession import session_options

    assert worker_threads() is None and session_options().intra_op_num_threads == 0  # the parent keeps ORT's default
    path = shared.path
    assert os.path.exists(path)
    pool.release(shared)
    assert not os.path.exists(path)


def test_sequential_executor_passes_the_object_itself():
    seq = SequentialExecutor()
    value = {"array": np.zeros(3)}
    assert seq.map(_lookup, seq.share(value), ["array"])[0] is value["array"]


@pytest.mark.parametrize("user", [False, True])
def test_a_failing_task_is_reported_with_its_label(pool, user):
    shared = pool.share({"bad": 3, "user": user})
    labels = [f"item number {i}" for i in range(8)]
    with pytest.raises(TaskError if user else TaskCrash) as info:
        pool.map(_fail_on, shared, list(range(8)), labels=labels)
    err = info.value
    assert err.label == "item number 3"
    if user:
        assert isinstance(err, MpcompileError) and err.exit_code == 2
        assert str(err) == "item number 3: item 3 is bad"
    else:
        assert str(err) == "item number 3 failed: ZeroDivisionError: boom"
        assert "ZeroDivisionError" in err.remote_traceback  # the worker's traceback is kept
    # the pool is still usable afterwards
    assert pool.map(_fail_on, shared, [0, 1]) == [0, 1]


def _fail_twice(value, item):
    if item == 0:
        time.sleep(0.4)
        raise ValueError("zero")
    if item == 1:
        raise ValueError("one")
    return item


def test_the_first_failure_in_item_order_is_reported(pool):
    """Item 1 fails first, item 0 (slower) fails too: the report is item 0's, as in a sequential run."""
    with pytest.raises(TaskCrash) as info:
        pool.map(_fail_twice, pool.share(None), [0, 1, 2], labels=["zero", "one", "two"])
    assert info.value.label == "zero" and str(info.value) == "zero failed: ValueError: zero"


def test_open_executor_picks_the_backend():
    assert isinstance(open_executor(), SequentialExecutor)
    assert isinstance(open_executor(workers=1), SequentialExecutor)
    with open_executor(workers=3) as ex:
        assert isinstance(ex, ProcessExecutor) and ex.workers == 3
    with pytest.raises(MpcompileError, match="at least 1"):
        open_executor(workers=0)


# ============================================================================ determinism: sensitivity
def _sensitivity_numbers(plan, data, executor):
    return [dataclasses.astuple(s) for s in local_sensitivity(plan, open_data(plan, data), samples=32, executor=executor)]


def test_sensitivity_is_identical_on_workers_small_cnn(small_cnn_path, small_cnn_data, parallel):
    plan = calibrate(small_cnn_path, small_cnn_data, progress=False).plan
    sequential = _sensitivity_numbers(plan, small_cnn_data, SequentialExecutor())
    assert len(sequential) > 3
    assert _sensitivity_numbers(plan, small_cnn_data, parallel) == sequential


def test_sensitivity_is_identical_on_workers_mnist(parallel):
    plan = calibrate(MNIST, MNIST_CALIB, progress=False).plan
    sequential = _sensitivity_numbers(plan, MNIST_CALIB, SequentialExecutor())
    assert _sensitivity_numbers(plan, MNIST_CALIB, parallel) == sequential


def _broken_plan():
    """MNIST's plan with one activation's QuantSpec made unusable (axis 7 of a 4-d tensor)."""
    plan = calibrate(MNIST, MNIST_CALIB, progress=False).plan
    node = next(n for n in plan.nodes if n.op_type == "Relu" and n.precision is not None and n.precision.is_integer)
    tensor = plan.tensors[node.outputs[0]]
    tensor.quant = QuantSpec(tensor.quant.qtype, np.ones(3, np.float32), np.zeros(3, np.int8), axis=7)
    return plan, node


@pytest.mark.parametrize("where", ["sequential", "processes", "ray"])
def test_a_failing_layer_is_named(where, request):
    executor = SequentialExecutor() if where == "sequential" else request.getfixturevalue(
        "pool" if where == "processes" else "ray_executor")
    plan, node = _broken_plan()
    with pytest.raises(TaskCrash) as info:
        local_sensitivity(plan, open_data(plan, MNIST_CALIB), samples=16, executor=executor)
    # the first failing layer in graph order, on every executor: the Relu itself (its output's spec)
    assert info.value.label == f"sensitivity of layer {node.name!r} (Relu)"
    assert "IndexError" in str(info.value)


# ============================================================================ determinism: the auto search
def _auto(executor, metric="cosine", budget=1e-5, model=MNIST, calib=MNIST_CALIB, evaluation=MNIST_EVAL, samples=200):
    calibrated = calibrate(model, calib, progress=False)
    graph = as_graph(model)
    result = auto_plan(graph, calibrated.stats, calibrated.config, open_data(graph, evaluation), metric=metric,
                       max_drop=budget, samples=samples, executor=executor)
    return serde.plan_hash(result.plan), [r.to_dict() for r in result.rows], result.ranking


def test_auto_plan_is_identical_on_workers_mnist(parallel):
    sequential = _auto(SequentialExecutor())
    assert len(sequential[1]) >= 3  # a real search: uniform INT8, then greedy promotions
    assert _auto(parallel) == sequential


def test_auto_plan_is_identical_on_workers_small_cnn(small_cnn_path, small_cnn_data, parallel):
    kwargs = {"model": small_cnn_path, "calib": small_cnn_data, "evaluation": small_cnn_data, "samples": 64}
    sequential = _auto(SequentialExecutor(), budget=1e-6, **kwargs)
    assert _auto(parallel, budget=1e-6, **kwargs) == sequential


def test_calibrate_with_workers_gives_the_sequential_plan(tmp_path):
    kwargs = {"precision": "auto", "metric": "cosine", "max_accuracy_drop": 1e-5, "eval_data": MNIST_EVAL,
              "samples": 200, "progress": False}
    plans = [serde.plan_hash(calibrate(MNIST, MNIST_CALIB, **kwargs, **extra).plan) for extra in ({}, {"workers": 2})]
    assert plans[0] == plans[1]


# ============================================================================ CLI
def test_sensitivity_cli_with_workers_writes_the_same_json(tmp_path):
    from click.testing import CliRunner

    from mpcompile.cli.main import cli

    outputs = []
    for extra in ([], ["--workers", "2"]):
        path = tmp_path / f"s{len(outputs)}.json"
        out = CliRunner().invoke(cli, ["sensitivity", str(MNIST), "--data", str(MNIST_CALIB), "--quiet",
                                       "--json", str(path), *extra])
        assert out.exit_code == 0, out.output
        outputs.append(json.loads(path.read_text()))
    assert outputs[0] == outputs[1]


BLOCK_RAY = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "ray":
                raise ImportError("No module named 'ray'")
            return None

    sys.meta_path.insert(0, Block())
    from mpcompile.cli.main import main
    sys.argv = ["mpcompile"] + sys.argv[1:]
    main()
    """
)


@pytest.mark.parametrize("command", ["sensitivity", "calibrate", "compile"])
def test_ray_without_ray_installed_is_one_line_exit_2(tmp_path, command):
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_RAY, command, str(MNIST), "--data", str(MNIST_CALIB), "--ray", "local", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --ray needs Ray") and "pip install 'mpcompile[ray]'" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing written
    assert time.perf_counter() - started < 60  # refused before any calibration


def test_a_ray_worker_with_other_versions_refuses(ray_executor):
    """A node with another onnxruntime could compute other numbers: its first task says so, naming the task."""
    plan = calibrate(MNIST, MNIST_CALIB, progress=False).plan
    expected = ray_executor._expected
    ray_executor._expected = {**expected, "onnxruntime": "0.0.1"}
    try:
        with pytest.raises(TaskError) as info:
            local_sensitivity(plan, open_data(plan, MNIST_CALIB), samples=8, executor=ray_executor)
    finally:
        ray_executor._expected = expected
    message = str(info.value)
    assert message.startswith("sensitivity of layer ") and "has other versions than the driver: onnxruntime" in message
    assert "(driver 0.0.1)" in message
