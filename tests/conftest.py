import os

# Eight host devices for the mesh tests; set before JAX is first imported. XLA's CPU collectives
# abort a rendezvous that waits 40 s (its default), which 8 device threads on a loaded 2-core
# machine can exceed; a generous limit keeps that a slow step rather than a crash.
CPU_COLLECTIVE_FLAGS = "--xla_cpu_collective_call_terminate_timeout_seconds=900 --xla_cpu_collective_timeout_seconds=900"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {CPU_COLLECTIVE_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
