"""Run every fuzz target (or those named) for FUZZ_SECONDS each, one after another on
one core: seeds first (seeds.py), then `python fuzz_<name>.py CORPUS -max_total_time=...`
(atheris), or for a target written in C (fuzz_<name>.c, the library's own parsers) the
libFuzzer binary clang builds of it (build_c), with the same options.
Findings (crash-*, timeout-*, oom-* inputs) land in FUZZ_DIR/artifacts; a summary line
per target (runs, executions per second, coverage) is printed for FUZZING.md.

    python tests/fuzz/run.py [TARGET...]     (make fuzz; FUZZ_SECONDS, FUZZ_DIR)
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets():
    return sorted(p.stem[len("fuzz_"):] for p in HERE.glob("fuzz_*.py"))


def build_c(name, out_dir):
    """The libFuzzer binary of fuzz_<name>.c (clang, AddressSanitizer and UBSan), or None
    when the target is a Python one. Raises CalledProcessError when it does not build."""
    source = HERE / f"fuzz_{name}.c"
    if not source.exists():
        return None
    binary = Path(out_dir) / f"fuzz_{name}"
    subprocess.run(["clang", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                    "-fno-sanitize-recover=undefined", "-o", str(binary), str(source), "-lz"],
                   check=True)
    return binary


def main(argv):
    names = argv or targets()
    try:
        if any(not (HERE / f"fuzz_{name}.c").exists() for name in names):
            import atheris  # noqa: F401 - without it a target only runs its corpus once
    except ImportError:
        print("tests/fuzz/run.py: atheris is not installed, so nothing would be fuzzed"
              " (make fuzz installs it)", file=sys.stderr)
        return 2
    seconds = int(os.environ.get("FUZZ_SECONDS", "60"))
    work = Path(os.environ.get("FUZZ_DIR", "/tmp/vdiskio-fuzz"))
    sys.path.insert(0, str(HERE))
    import seeds
    seeds.write_corpus(work / "corpus", names)
    artifacts = work / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        corpus = work / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        log = work / f"{name}.log"
        started = time.monotonic()
        scratch = tempfile.mkdtemp(prefix=f"vdiskio-fuzz-{name}-",
                                   dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        binary = build_c(name, work)
        command = [str(binary)] if binary else [sys.executable, str(HERE / f"fuzz_{name}.py")]
        try:
            with open(log, "wb") as out:
                rc = subprocess.run(command + [str(corpus),
                                     f"-max_total_time={seconds}", "-timeout=10",
                                     "-rss_limit_mb=1024", "-max_len=1048576",
                                     f"-artifact_prefix={artifacts}/{name}-",
                                     "-print_final_stats=1"], stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "VDISKIO_FUZZ_WORK": scratch}).returncode
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        text = log.read_text(errors="replace")
        last = [line for line in text.splitlines() if re.search(r"#\d+\s+(pulse|REDUCE|NEW|DONE|INITED)", line)]
        runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
        speed = re.search(r"stat::average_exec_per_sec:\s*(\d+)", text)
        if rc == 0 and not runs:
            rc = 3      # libFuzzer never reported its runs: this was no fuzzing
            text += "\nno libFuzzer statistics: the target did not fuzz\n"
        cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
        print(f"{name}: {time.monotonic() - started:.0f} s, runs {runs.group(1) if runs else '?'},"
              f" {speed.group(1) if speed else '?'} exec/s, cov {cov[-1][0] if cov else '?'}"
              f" ft {cov[-1][1] if cov else '?'}, corpus {len(list(corpus.iterdir()))},"
              f" exit {rc}{'' if rc == 0 else ' (finding: see ' + str(log) + ')'}", flush=True)
        if rc != 0:
            failed.append(name)
            print("\n".join(last[-3:] + text.splitlines()[-30:]), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
