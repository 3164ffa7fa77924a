"""Multi-process training on one machine: 2 processes x 4 CPU devices (jax.distributed over
localhost) against 1 process x 8 devices, and a 2-process checkpoint resumed by 1 process."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cipo_jax.config import RunConfig
from conftest import CPU_COLLECTIVE_FLAGS
from cipo_jax.distributed import combine_shares, launch_settings, my_share, on_cloud_tpu_vm
from cipo_jax.train.metrics import is_timing
from cipo_jax.train.trainer import UPDATE_METRICS

REPO = Path(__file__).resolve().parents[1]
# optim.lr: the first Adam step maps each gradient element to about +-lr, including elements that
# are pure rounding noise (the policy-gradient terms cancel), so the difference between two
# summation orders of the same gradient scales with lr (3e-4 gives 1.3e-5 after 3 steps).
SMALL = ["optim.lr=1e-4"]  # on top of tests/small.yaml
TIMEOUT_S = 600  # a collective deadlock fails the test instead of hanging it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPO_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {CPU_COLLECTIVE_FLAGS}",
               JAX_PLATFORMS="cpu", **extra)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
    return env


def _train_cmd(run_dir: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "cipo_jax", "train", "--config", "tests/small.yaml", f"run.run_dir={run_dir}",
            f"run.steps={steps}", "--no-progress", *SMALL]


def train_processes(run_dir: Path, steps: int, processes: int, devices_each: int) -> None:
    """`python -m cipo_jax train` in `processes` processes joined through CIPO_* variables."""
    port = _free_port()
    procs = []
    for i in range(processes):
        extra = {} if processes == 1 else dict(CIPO_COORDINATOR=f"127.0.0.1:{port}",
                                               CIPO_NUM_PROCESSES=str(processes), CIPO_PROCESS_ID=str(i))
        log = open(run_dir.with_name(f"{run_dir.name}.p{i}.log"), "w")
        procs.append((subprocess.Popen(_train_cmd(run_dir, steps), cwd=REPO, env=_env(devices_each, **extra),
                                       stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for proc, log in procs:
            proc.wait(timeout=TIMEOUT_S)
            log.close()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    for i, (proc, _) in enumerate(procs):
        tail = run_dir.with_name(f"{run_dir.name}.p{i}.log").read_text()[-2000:]
        assert proc.returncode == 0, f"process {i} exited {proc.returncode}:\n{tail}"


def _params(run_dir: Path, step: int | None = None) -> dict:
    """{path: array} of a run's parameters, restored in this (1-process, 8-device) pytest process."""
    import jax
    from flax import nnx

    from cipo_jax.train.policy import load_policy

    model = load_policy(run_dir, step).model
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    two, one = root / "two", root / "one"
    train_processes(two, steps=3, processes=2, devices_each=4)
    train_processes(one, steps=3, processes=1, devices_each=8)
    return two, one


@pytest.mark.slow
def test_two_processes_train_the_same_parameters_as_one(runs):
    two, one = runs
    # Same prompts, samples, verdicts and corrections at every step, the same losses up to
    # summation order...
    rows_two, rows_one = _rows(two), _rows(one)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [1, 2, 3]
    for a, b in zip(rows_two, rows_one):
        assert a.keys() == b.keys()
        assert {k: a[k] for k in a if k not in UPDATE_METRICS} == {k: b[k] for k in b if k not in UPDATE_METRICS}
        np.testing.assert_allclose([a[k] for k in UPDATE_METRICS], [b[k] for k in UPDATE_METRICS], rtol=1e-4, atol=1e-7)
    # ...and the same parameters, up to the summation order of cross-device reductions, which is
    # well below how far the RL steps moved them (measured: 4.4e-6 vs 9.5e-5).
    a, b, start = _params(two), _params(one), _params(one, step=1)
    diff = max(np.max(np.abs(a[k] - b[k])) for k in b)
    moved = max(np.max(np.abs(b[k] - start[k])) for k in b)
    assert a.keys() == b.keys()
    assert diff <= 1e-5, diff
    assert moved > 10 * diff, (moved, diff)
    # Only process 0 writes the run's files: one metrics row per step, no duplicates.
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 3
    assert json.loads((two / "summary.json").read_text())["step"] == 3
    assert not list(two.glob(".write_probe*"))


@pytest.mark.slow
def test_two_process_checkpoint_resumes_in_one_process(runs, tmp_path):
    two, one = runs
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    train_processes(resumed, steps=4, processes=1, devices_each=8)
    rows = _rows(resumed)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # no SFT again, step 4 only
    assert rows[:3] == _rows(two)  # the 2-process run's rows are kept
    before, after = _params(two), _params(resumed)
    assert any(np.max(np.abs(after[k] - before[k])) > 0 for k in before)  # step 4 trained


def test_launch_settings_from_config_and_environment():
    env = {"CIPO_COORDINATOR": "10.0.0.1:1234", "CIPO_NUM_PROCESSES": "4", "CIPO_PROCESS_ID": "3"}
    s = launch_settings(RunConfig(), env)
    assert (s.coordinator_address, s.num_processes, s.process_id, s.auto) == ("10.0.0.1:1234", 4, 3, False)
    s = launch_settings(RunConfig(coordinator_address="h:9", num_processes=2, process_id=1), env)
    assert (s.coordinator_address, s.num_processes, s.process_id) == ("h:9", 2, 1)  # the config wins
    assert launch_settings(RunConfig(), {"JAX_PLATFORMS": "cpu"}) is None


@pytest.mark.parametrize("run, env, words", [
    (RunConfig(num_processes=2, process_id=0), {}, "coordinator_address"),
    (RunConfig(num_processes=2, coordinator_address="h:1"), {}, "process_id"),
    (RunConfig(num_processes=2, coordinator_address="h:1", process_id=2), {}, "[0, 2)"),
    (RunConfig(num_processes=2, coordinator_address="nohostport", process_id=0), {}, "host:port"),
    (RunConfig(num_processes=0), {}, "num_processes"),
    (RunConfig(coordinator_address="h:1"), {}, "is 1"),
    (RunConfig(), {"CIPO_NUM_PROCESSES": "two"}, "CIPO_NUM_PROCESSES"),
])
def test_bad_launch_settings_are_one_line_errors(run, env, words):
    with pytest.raises(ValueError) as e:
        launch_settings(run, {"JAX_PLATFORMS": "cpu", **env})
    assert words in str(e.value) and "\n" not in str(e.value)


def test_tpu_detection_reads_the_pci_bus(tmp_path):
    def device(name, vendor, dev):
        d = tmp_path / name
        d.mkdir()
        (d / "vendor").write_text(vendor + "\n")
        (d / "device").write_text(dev + "\n")

    device("0000:00:04.0", "0x1ae0", "0x0042")  # gVNIC network card: Google, not a TPU
    assert not on_cloud_tpu_vm({}, pci_root=tmp_path)
    device("0000:00:05.0", "0x1ae0", "0x0063")  # TPU v5e
    assert on_cloud_tpu_vm({}, pci_root=tmp_path)
    assert not on_cloud_tpu_vm({"JAX_PLATFORMS": "cpu"}, pci_root=tmp_path)


COMBINE = """
import sys, jax, numpy as np
from cipo_jax.train.trainer import UPDATE_METRICS
from cipo_jax.distributed import combine_shares, my_share
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
values = np.array([[i / 3, i * 1e-300] for i in range(7)])  # float64 that float32 would change
full = combine_shares(values[my_share(7)], 7)
print("EQUAL" if np.array_equal(full, values) else f"DIFFERENT {full!r}")
"""


def test_two_processes_combine_their_shares_bit_for_bit():
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", COMBINE, f"127.0.0.1:{port}", str(i)], cwd=REPO,
                              env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(o.strip().endswith("EQUAL") for o in outs), outs


def test_single_process_share_is_everything():
    assert my_share(5).tolist() == [0, 1, 2, 3, 4]
    values = np.arange(10.0).reshape(5, 2)
    assert combine_shares(values, 5) is not None and np.array_equal(combine_shares(values, 5), values)
    with pytest.raises(ValueError, match="share"):
        combine_shares(values[:3], 5)
