"""Multi-process (multi-host) runs: start `jax.distributed`, gather arrays to every host, and
split host-side work (verification) among the processes.

The design is multi-controller SPMD with identical host state: every process draws the same
prompts, runs the same jitted sampling and update programs on the global mesh, and holds the
same host-side data. Host work that is expensive and independent per rollout, verification, is
split: process p verifies rows i with i % P == p, and `combine_shares` gives every process all
the results, so all of them build the same batch. The update batch is then placed with
`jax.device_put(global value, NamedSharding)`, which on each process keeps only its addressable
shards of that (identical) global value.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import numpy as np

from cipo_jax.config import RunConfig

log = logging.getLogger(__name__)

ENV_COORDINATOR = "CIPO_COORDINATOR"
ENV_NUM_PROCESSES = "CIPO_NUM_PROCESSES"
ENV_PROCESS_ID = "CIPO_PROCESS_ID"


@dataclass(frozen=True)
class Launch:
    """How this process joins the run: explicit (coordinator, count, rank) or "auto" (Cloud TPU
    metadata supplies them)."""

    coordinator_address: str
    num_processes: int
    process_id: int
    auto: bool = False


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


# TPU chips sit on the PCI bus under Google's vendor id (which gVNIC network cards share, hence the
# device ids: v2/v3, v4, v5p, v5e, v6e, TPU7x).
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = frozenset({"0x0027", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})


def on_cloud_tpu_vm(environ: Mapping[str, str] = os.environ, pci_root: Path = Path("/sys/bus/pci/devices")) -> bool:
    """TPU chips on this machine and JAX allowed to use them."""
    if environ.get("JAX_PLATFORMS", "tpu").split(",")[0] not in ("", "tpu"):
        return False
    for vendor in pci_root.glob("*/vendor"):
        device = vendor.with_name("device")
        if vendor.read_text().strip() == GOOGLE_PCI_VENDOR and device.is_file() \
                and device.read_text().strip() in TPU_PCI_DEVICES:
            return True
    return False


def launch_settings(run: RunConfig, environ: Mapping[str, str] = os.environ) -> Launch | None:
    """The resolved settings, or None for a single-process run. Config fields win over the
    CIPO_* environment; a TPU VM with neither lets JAX read the pod's topology itself."""
    address = run.coordinator_address or environ.get(ENV_COORDINATOR, "").strip()
    env_n, env_id = _env_int(environ, ENV_NUM_PROCESSES), _env_int(environ, ENV_PROCESS_ID)
    n = run.num_processes if run.num_processes != 1 or env_n is None else env_n
    pid = run.process_id if run.process_id >= 0 or env_id is None else env_id
    if n < 1:
        raise ValueError(f"run.num_processes must be >= 1, got {n}")
    if n == 1:
        if address or pid > 0:
            raise ValueError(f"a coordinator address ({address!r}) or process id ({pid}) was given but "
                             f"run.num_processes (or {ENV_NUM_PROCESSES}) is 1; set it to the process count")
        if on_cloud_tpu_vm(environ):
            return Launch("", 0, -1, auto=True)
        return None
    if not address:
        raise ValueError(f"run.num_processes={n} needs run.coordinator_address (or {ENV_COORDINATOR}) as host:port")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator address {address!r} is not host:port")
    if not 0 <= pid < n:
        raise ValueError(f"run.num_processes={n} needs run.process_id (or {ENV_PROCESS_ID}) in [0, {n}), got {pid}")
    return Launch(address, n, pid)


def initialize(run: RunConfig, environ: Mapping[str, str] = os.environ) -> None:
    """Join the multi-process run described by `run` / the environment (no-op for one process).
    Must run before any JAX computation."""
    launch = launch_settings(run, environ)
    if launch is None or jax.distributed.is_initialized():
        return
    # On CPU, programs with cross-process collectives that are in flight together can interleave
    # differently on different local devices and deadlock; run each to completion (CPU backend only).
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    if launch.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=launch.coordinator_address,
                                   num_processes=launch.num_processes, process_id=launch.process_id)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def is_main() -> bool:
    """Process 0 writes the run's files (metrics, config, summary)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """Every array leaf as a NumPy array of its full global value, on every process (an array that
    spans other processes' devices is all-gathered; a local one is just copied)."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)


def my_share(n: int) -> np.ndarray:
    """Indices of the n items this process handles: i % process_count == process_index."""
    return np.arange(jax.process_index(), n, jax.process_count())


def combine_shares(values: np.ndarray, n: int) -> np.ndarray:
    """All n items' values on every process, given this process's `values` for `my_share(n)`.

    Exchanged as raw bytes, so any dtype (float64 included, which JAX would narrow) arrives bit
    for bit."""
    count = jax.process_count()
    values = np.ascontiguousarray(values)
    if values.shape[0] != len(my_share(n)):
        raise ValueError(f"combine_shares: {values.shape[0]} values for a share of {len(my_share(n))} items")
    if count == 1:
        return values
    from jax.experimental import multihost_utils

    per = -(-n // count)
    item_shape = values.shape[1:]
    padded = np.zeros((per, *item_shape), values.dtype)
    padded[: len(values)] = values
    raw = padded.reshape(per, -1).view(np.uint8)  # [per, bytes per item]
    gathered = np.asarray(multihost_utils.process_allgather(raw, tiled=False))  # [count, per, bytes]
    full = np.empty((n, *item_shape), values.dtype)
    for p in range(count):
        rows = np.arange(p, n, count)
        full[rows] = gathered[p, : len(rows)].copy().view(values.dtype).reshape(len(rows), *item_shape)
    return full


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def main_first(name: str) -> Iterator[None]:
    """Process 0 runs the block before the others do (e.g. it writes a file they then read)."""
    if not is_main():
        barrier(name)
    yield
    if is_main():
        barrier(name)
