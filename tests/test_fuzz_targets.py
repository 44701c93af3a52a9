"""The fuzz targets (tests/fuzz) without atheris: each runs over its seeds, so a harness
that rots or a property that no longer holds fails here; and every fuzzer finding
(tests/fuzz_regressions.py) is replayed through its target. The C targets (fuzz_*.c) are
built with clang, as make fuzz builds them, and run over their seeds."""

import os
import subprocess
import sys

import pytest

import fuzz_regressions
from helpers import ROOT, require_tool

FUZZ = ROOT / "tests" / "fuzz"
# Targets built on fuzzlib (main() runs them without atheris under VDISKIO_FUZZ_PLAIN=1).
TARGETS = sorted(p.stem[len("fuzz_"):] for p in FUZZ.glob("fuzz_*.py")
                 if "fuzzlib.main(" in p.read_text())
ENV = {**os.environ, "VDISKIO_FUZZ_PLAIN": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    subprocess.run([sys.executable, str(FUZZ / "seeds.py"), str(d)] + TARGETS, check=True,
                   env=ENV)
    return d


@pytest.mark.parametrize("target", TARGETS)
def test_target_holds_on_its_seeds(target, corpus):
    seeds = corpus / target
    assert seeds.is_dir() and any(seeds.iterdir()), f"no seeds for {target}"
    p = subprocess.run([sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(seeds)],
                       capture_output=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr.decode()[-3000:]


C_TARGETS = sorted(p.stem[len("fuzz_"):] for p in FUZZ.glob("fuzz_*.c"))


@pytest.mark.parametrize("target", C_TARGETS)
def test_c_target_holds_on_its_seeds(target, tmp_path):
    require_tool("clang")
    sys.path.insert(0, str(FUZZ))
    import run
    import seeds
    binary = run.build_c(target, tmp_path)
    seeds.write_corpus(tmp_path / "corpus", [target])
    corpus = tmp_path / "corpus" / target
    assert len(list(corpus.iterdir())) >= 8, f"no seeds for {target}"
    p = subprocess.run([str(binary), str(corpus), "-runs=0"], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert b"DONE" in p.stderr


@pytest.mark.parametrize("name", sorted(fuzz_regressions.FINDINGS))
def test_fuzzer_finding(name, tmp_path):
    target, build = fuzz_regressions.FINDINGS[name]
    path = tmp_path / name
    path.write_bytes(build())
    p = subprocess.run([sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(path)],
                       capture_output=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
