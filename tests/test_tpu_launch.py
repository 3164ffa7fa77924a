"""tpu/launch.py against a fake `gcloud` on PATH that records its argv (one JSON list per call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parent.parent / "tpu" / "launch.py"
SETTINGS = {"TPU_NAME": "pod", "ZONE": "us-central2-b", "ACCELERATOR_TYPE": "v4-32",
            "RUNTIME_VERSION": "tpu-ubuntu2204-base"}


@pytest.fixture
def fake(tmp_path):
    """A PATH holding only a fake gcloud; returns (env, read_calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    gcloud = bin_dir / "gcloud"
    # The fake also copies an scp'd tarball aside so the test can look inside it.
    gcloud.write_text(f"#!{sys.executable}\nimport json, shutil, sys\n"
                      f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      "if 'scp' in sys.argv: shutil.copy(sys.argv[5], "
                      f"{str(tmp_path / 'shipped.tar.gz')!r})\n")
    gcloud.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "PROJECT"}
    env.update(SETTINGS, PATH=str(bin_dir))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return env, calls


def launch(env, *argv):
    return subprocess.run([sys.executable, str(LAUNCH), *argv], env=env, capture_output=True, text=True)


def test_create_spot_and_queued(fake):
    env, calls = fake
    assert launch(env, "create", "--spot").returncode == 0
    assert launch(env, "create", "--queued", "--project", "proj").returncode == 0
    assert calls() == [
        ["compute", "tpus", "tpu-vm", "create", "pod", "--zone", "us-central2-b",
         "--accelerator-type", "v4-32", "--version", "tpu-ubuntu2204-base", "--spot"],
        ["compute", "tpus", "queued-resources", "create", "pod", "--node-id", "pod", "--zone", "us-central2-b",
         "--project", "proj", "--accelerator-type", "v4-32", "--runtime-version", "tpu-ubuntu2204-base"],
    ]


def test_flags_override_environment(fake):
    env, calls = fake
    assert launch(env, "delete", "--name", "other", "--zone", "europe-west4-a").returncode == 0
    assert launch(env, "delete", "--queued").returncode == 0
    assert calls() == [
        ["compute", "tpus", "tpu-vm", "delete", "other", "--zone", "europe-west4-a", "--quiet"],
        ["compute", "tpus", "queued-resources", "delete", "pod", "--zone", "us-central2-b", "--force", "--quiet"],
    ]


def test_setup_ships_repo_and_installs_tpu_requirements_on_all_workers(fake, tmp_path):
    env, calls = fake
    r = launch(env, "setup")
    assert r.returncode == 0, r.stderr
    scp, ssh = calls()
    assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp[5] == "pod:~/cipo_jax.tar.gz"
    assert "--worker=all" in scp and "--worker=all" in ssh
    remote = ssh[ssh.index("--command") + 1]
    assert "pip install -q -r requirements-tpu.txt" in remote and "tar -xzf ~/cipo_jax.tar.gz" in remote
    with tarfile.open(tmp_path / "shipped.tar.gz") as tar:
        names = tar.getnames()
    assert "requirements-tpu.txt" in names and "cipo_jax/config.py" in names
    assert not any(n.split("/")[0] in (".git", ".venv") or "__pycache__" in n for n in names)


def test_run_starts_same_command_on_every_worker(fake):
    env, calls = fake
    r = launch(env, "run", "--config", "configs/qwen3_4b_tpu.yaml", "run.steps=500", "tasks.spec=gym:a b")
    assert r.returncode == 0, r.stderr
    (ssh,) = calls()
    assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = ssh[ssh.index("--command") + 1]
    assert ("nohup .venv/bin/python -m cipo_jax train --config configs/qwen3_4b_tpu.yaml run.steps=500 "
            "'tasks.spec=gym:a b' > logs/train.log 2>&1") in remote


def test_logs_and_stop(fake):
    env, calls = fake
    assert launch(env, "logs", "--follow").returncode == 0
    assert launch(env, "logs", "--worker", "all", "--lines", "5").returncode == 0
    assert launch(env, "stop").returncode == 0
    logs0, logs_all, stop = calls()
    assert "--worker=0" in logs0 and logs0[-1] == "tail -n 50 -f cipo_jax/logs/train.log"
    assert "--worker=all" in logs_all and logs_all[-1] == "tail -n 5 cipo_jax/logs/train.log"
    assert "--worker=all" in stop and "kill $(cat cipo_jax/train.pid)" in stop[-1]


@pytest.mark.parametrize("command", [["create", "--spot"], ["setup"], ["run", "--config", "c.yaml"],
                                     ["logs"], ["stop"], ["delete"]])
def test_dry_run_prints_and_executes_nothing(fake, command):
    env, calls = fake
    r = launch(env, *command, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("+ gcloud compute tpus ")
    assert calls() == []


def test_missing_gcloud_is_a_clear_error(fake, tmp_path):
    env, calls = fake
    env["PATH"] = str(tmp_path)  # no gcloud here
    r = launch(env, "delete")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: gcloud not found on PATH")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("unset", ["TPU_NAME", "ZONE", "ACCELERATOR_TYPE", "RUNTIME_VERSION"])
def test_unset_setting_is_named(fake, unset):
    env, calls = fake
    del env[unset]
    r = launch(env, "create")
    assert r.returncode == 2 and calls() == []
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and f"{unset} is not set" in r.stderr


def test_failing_gcloud_stops_with_its_exit_code_named(fake, tmp_path):
    env, calls = fake
    gcloud = Path(env["PATH"]) / "gcloud"
    gcloud.write_text("#!/bin/sh\nexit 3\n")
    r = launch(env, "delete")
    assert r.returncode == 2 and "exit code 3" in r.stderr
