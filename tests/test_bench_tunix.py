"""`bench sample`'s Tunix side without Tunix: the worker script's plumbing (its tokenizer, its
figures, its imports) and the driver's handling of a foreign interpreter's results."""

import argparse
import ast
import json
import sys
from pathlib import Path

import pytest

from cipo_jax.bench import sample, tunix_sampler


def _sample_args(argv):
    parser = argparse.ArgumentParser()
    sample.add_arguments(parser)
    return parser.parse_args(argv)


def test_id_tokenizer_hands_over_ids_without_bos_or_reachable_eos():
    tok = tunix_sampler.IdTokenizer()
    ids = [1000, 39999, 7]
    assert tok.encode(tok.decode(ids)) == ids
    assert not tok.bos_id()  # Tunix prepends a BOS only when bos_id() is truthy
    assert tok.eos_id() < 0 and tok.pad_id() == 0  # prompts are drawn from 1000..40000


def test_record_matches_bench_sample_workers_and_rejects_short_rows():
    rec = tunix_sampler.record(8, 64, first_s=10.0, best_s=2.0, tokens=[[1] * 64] * 8)
    assert rec["tok_s"] == pytest.approx(8 * 64 / 2.0) and rec["compile_s"] == pytest.approx(8.0)
    with pytest.raises(RuntimeError, match="tokens per row"):
        tunix_sampler.record(2, 64, 1.0, 1.0, [[1] * 64, [1] * 10])


def test_worker_imports_neither_cipo_jax_nor_tunix_at_module_level():
    tree = ast.parse(Path(tunix_sampler.__file__).read_text())
    names = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [n for n in names if n.startswith("cipo_jax")]
    top = {a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    top |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top <= {"__future__", "argparse", "json", "time", "pathlib"}


def test_tunix_command_carries_the_shape_to_the_worker(tmp_path):
    args = _sample_args(["--sides", "ours,tunix", "--tunix-python", "/x/bin/python", "--batches", "1,4",
                         "--new-tokens", "16", "--prompt-len", "8", "--repeats", "3"])
    cmd, env = sample.tunix_command(args, tmp_path / "t.json")
    assert cmd[:3] == ["/x/bin/python", "-m", "cipo_jax.bench.tunix_sampler"]
    worker = tunix_sampler.parse_args(cmd[3:])
    assert (worker.batches, worker.new_tokens, worker.prompt_len, worker.repeats, worker.out) == (
        "1,4", 16, 8, 3, str(tmp_path / "t.json"))
    assert (Path(env["PYTHONPATH"]) / "cipo_jax" / "bench" / "tunix_sampler.py").is_file()


def test_tunix_side_needs_an_interpreter():
    with pytest.raises(SystemExit, match="tunix-python"):
        sample.main(_sample_args(["--sides", "tunix"]))


def test_driver_reads_a_foreign_interpreters_figures(tmp_path):
    # A stand-in for the Tunix venv's python: writes figures in the worker's format.
    fake = tmp_path / "python"
    fake.write_text(f"""#!{sys.executable}
import json, sys
argv = sys.argv[sys.argv.index("-m") + 2:]
get = lambda k: argv[argv.index(k) + 1]
n = int(get("--new-tokens"))
batches = get("--batches").split(",")
out = {{b: {{"tok_s": 10.0 * int(b), "compile_s": 1.5, "tokens": [[5] * n] * int(b)}} for b in batches}}
out.update(param_bytes=538060032, cache_size=int(get("--prompt-len")) + n, tunix="0.1.7")
open(get("--out"), "w").write(json.dumps(out))
""")
    fake.chmod(0o755)
    out = tmp_path / "s.json"
    args = _sample_args(["--sides", "tunix", "--tunix-python", str(fake), "--batches", "1,8", "--rounds", "2",
                         "--new-tokens", "4", "--json", str(out)])
    assert sample.main(args) == 0
    figures = json.loads(out.read_text())
    assert [figures["batches"][b]["tunix"] for b in ("1", "8")] == [10.0, 80.0]
    assert len(figures["runs"]["tunix"]) == 2
