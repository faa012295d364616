"""Local runs share the machine: each step's thread pools get its share of the cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from kubeloop.config import Config
from kubeloop.local_run import (
    THREAD_VARIABLES,
    THREADS_VARIABLE,
    machine_cores,
    thread_budget,
    thread_environment,
)


@pytest.mark.parametrize(
    "cores,concurrent,cpu_limit,threads",
    [
        (2, 1, None, 2),  # one step at a time: every core
        (2, 2, None, 1),  # two training steps at once: one core each
        (2, 4, None, 1),  # never below one thread
        (8, 3, None, 2),  # rounded down: 3 x 2 threads fit on 8 cores, 3 x 3 do not
        (16, 4, None, 4),
        (8, 1, 2, 2),  # a CPU limit is the budget
        (8, 4, 6, 6),  # ... whatever runs beside it, as on a cluster
        (2, 1, 16, 2),  # but never more than the machine has
    ],
)
def test_thread_budget(cores, concurrent, cpu_limit, threads):
    assert thread_budget(cores=cores, concurrent_steps=concurrent, cpu_limit=cpu_limit) == threads


@pytest.mark.parametrize("cores,concurrent", [(0, 1), (2, 0)])
def test_thread_budget_refuses_nonsense(cores, concurrent):
    with pytest.raises(ValueError, match="at least 1"):
        thread_budget(cores=cores, concurrent_steps=concurrent)


def test_thread_environment_sets_every_pool():
    env = thread_environment(3)
    assert set(env) == {*THREAD_VARIABLES, THREADS_VARIABLE}
    assert set(env.values()) == {"3"}
    assert "OPENBLAS_CORETYPE" not in env  # the kernel choice is never ours to make


def test_local_budgets_follow_parallelism_and_explicit_cpu_limits():
    from kubeloop.pipelines.training import local_thread_budgets

    cores = machine_cores()
    cfg = Config()
    assert local_thread_budgets(cfg, 1) == {"train": cores, "default": cores}
    families = len(cfg.train.families)
    assert local_thread_budgets(cfg, 8)["train"] == max(1, cores // families)
    limited = Config.from_dict({"resources": {"train": {"cpu_limit": "1"}}})
    assert local_thread_budgets(limited, 1) == {"train": 1, "default": cores}


def _env_of(compiled: dict, fragment: str) -> dict[str, str]:
    executors = compiled["deploymentSpec"]["executors"]
    name = next(k for k in executors if fragment in k)
    return {e["name"]: e["value"] for e in executors[name]["container"].get("env", [])}


def test_the_local_pipeline_carries_each_steps_budget(tmp_path):
    from kfp import compiler

    from kubeloop.pipelines.training import build_training_pipeline, local_thread_budgets

    cfg = Config(target="y")
    path = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_training_pipeline(cfg, parallelism=2), str(path))
    compiled = next(yaml.safe_load_all(path.read_text()))
    budgets = local_thread_budgets(cfg, 2)
    train_env = _env_of(compiled, "train-op")
    assert train_env == thread_environment(budgets["train"])
    assert _env_of(compiled, "evaluate-op") == thread_environment(budgets["default"])


PROBE = """
import json
import numpy, scipy.linalg, sklearn.ensemble  # load OpenBLAS and OpenMP
from threadpoolctl import threadpool_info
from kubeloop.progress import stage
with stage("probe"):
    inside = {i["user_api"]: i["num_threads"] for i in threadpool_info()}
print("PROBE " + json.dumps(inside))
"""


def _pools_in_a_step(env: dict[str, str]) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in (*THREAD_VARIABLES, THREADS_VARIABLE)}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


def test_a_step_runs_its_pools_at_the_budget():
    pools = _pools_in_a_step(thread_environment(1))
    assert pools and set(pools.values()) == {1}
    # The budget alone (no pool variables) is applied through threadpoolctl.
    pools = _pools_in_a_step({THREADS_VARIABLE: "1"})
    assert set(pools.values()) == {1}
    if machine_cores() > 1:
        # Without a budget the pools take every core: the budget is what changed them.
        assert max(_pools_in_a_step({}).values()) > 1
