"""The harness: running and timing commands, alternating them in rounds until every row's
spread settles, the rows and their verdicts, and the text and Markdown tables.

A case names its commands (label -> Cmd) and its rows, each row computed per round from
the samples of some of those commands (a Compare). `Bench.measure` runs every command
once per round, in order on even rounds and reversed on odd ones, for the scale's rounds;
then, up to the round cap, only the commands of rows whose spread is still wider than
±10% of their median. Rows that stay wider say so ("noisy")."""

import os
import shlex
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import DRIVERS, LIB, SPREAD, Target


class BenchError(Exception):
    """A command failed or an input could not be made: the rows it was for say so."""


# ---- running commands ---------------------------------------------------------------------
def shown(argv):
    """A command line for a message: paths shortened to their names."""
    return shlex.join(Path(a).name if a.startswith("/") else a for a in map(str, argv))


def last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@dataclass
class Sample:
    seconds: float          # wall clock of the whole command
    stdout: str
    extra: object = None    # what the command's after() returned (an output's size...)

    @property
    def steady(self):
        """The seconds a driver (bench/drivers/seq.c, pread.c) timed after its first I/O."""
        return float(self.stdout.split()[0])

    @property
    def checksum(self):
        fields = self.stdout.split()
        return fields[1] if len(fields) > 1 else None


def run_timed(argv, env):
    """Wall-clock time of the whole command, and its output."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        p.wait()
        seconds = time.perf_counter() - t0
        if p.returncode:
            err.seek(0)
            raise BenchError(f"{shown(argv)}: exit {p.returncode}: "
                             f"{last_line(err.read().decode(errors='replace'))}")
        out.seek(0)
        return Sample(seconds, out.read().decode(errors="replace"))


def run(argv, env=None, cwd=None, check=True, input=None):
    """An untimed command (building, checking); its failure is a BenchError."""
    argv = [str(a) for a in argv]
    p = subprocess.run(argv, env=env, cwd=cwd, input=input, capture_output=True, text=True,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode:
        raise BenchError(f"{shown(argv)}: exit {p.returncode}: {last_line(p.stderr)}")
    return p


@dataclass
class Cmd:
    """One command of a case: its argv, under the library or not, and untimed set-up and
    clean-up around each run (after()'s return value is kept in the sample)."""
    argv: list
    lib: bool = False
    before: object = None
    after: object = None


# ---- rows ----------------------------------------------------------------------------------
def shown_value(v, unit):
    """The value as the table shows it (verdicts judge this: a row showing 0.90x meets
    "≥ 0.90x")."""
    return round(v, 2 if unit == "x" else 1)


def fmt_value(v, unit):
    if unit == "x":
        return f"{v:.2f}x"
    if unit.startswith("%"):
        return f"{v:+.1f}{unit}"
    return f"{v:.1f} {unit}"


def fmt_target(t):
    s = f"{'≥' if t.op == '>=' else '≤'} {fmt_value(t.value, t.unit)}"
    return f"{s} ({t.text})" if t.text else s


def settled(values, tolerance=SPREAD):
    """Every value within ±tolerance of the median (two values at least)."""
    if len(values) < 2:
        return False
    med = statistics.median(values)
    return all(abs(v - med) <= tolerance * abs(med) for v in values)


@dataclass
class Row:
    case: str
    image: str
    vs: str
    unit: str = "x"
    target: Target = None
    judged: bool = True    # its spread decides the rounds (False: a deterministic value)
    values: list = field(default_factory=list)
    status: str = ""       # set when there is no measurement: not installed, error...

    @property
    def median(self):
        return statistics.median(self.values)

    @property
    def noisy(self):
        return self.judged and len(self.values) >= 2 and not settled(self.values)

    @property
    def result(self):
        return fmt_value(self.median, self.unit) if self.values else "-"

    @property
    def spread(self):
        if len(self.values) < 2:
            return "-"
        lo, hi = min(self.values), max(self.values)
        if self.unit == "x":
            text = f"{lo:.2f}-{hi:.2f}x"
        elif self.unit.startswith("%"):
            text = f"{lo:+.1f} to {hi:+.1f}{self.unit}"
        else:
            text = f"{lo:.1f}{' to ' if lo < 0 else '-'}{hi:.1f} {self.unit}"
        return text + (" noisy" if self.noisy else "")

    @property
    def verdict(self):
        if self.status:
            return self.status
        if not self.values:
            return "-"
        if self.target is None:
            return "info"
        shown = lambda v: shown_value(v, self.unit)
        met = (shown(self.median) >= shown(self.target.value) if self.target.op == ">="
               else shown(self.median) <= shown(self.target.value))
        return "PASS" if met else "MISS"

    def cells(self):
        return [self.case, self.image, self.vs, self.result, self.spread,
                str(len(self.values)) if self.values else "-",
                fmt_target(self.target) if self.target else "-", self.verdict]


HEADER = ["case", "image", "vs", "result (median)", "spread (min-max)", "rounds", "target",
          "verdict"]


def text_table(rows):
    cells = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    line = lambda c: "  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip()
    return "\n".join([line(HEADER), line(["-" * w for w in widths])] + [line(c) for c in cells[1:]])


def markdown_table(rows):
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in rows]
    return "\n".join(out)


# ---- what a row is computed from ----------------------------------------------------------
@dataclass
class Compare:
    """Row `row` gets, for every round in which all of `labels` ran, value(*samples)."""
    row: Row
    labels: tuple
    value: object


def whole(s):
    return s.seconds


def steady(s):
    return s.steady


def speed(metric=whole):
    """Baseline time / measured time: (base, measured) -> above 1 when faster."""
    return lambda base, measured: metric(base) / metric(measured)


def added_ms(per=1):
    """What the measured command adds over the baseline, in ms per process of a batch."""
    return lambda base, measured: (measured.seconds - base.seconds) * 1000 / per


def row_values(compare, samples):
    rounds = sorted(set.intersection(*(set(samples[label]) for label in compare.labels)))
    return [compare.value(*(samples[label][r] for label in compare.labels)) for r in rounds]


def labels_to_rerun(compares, samples):
    """The commands of the rows whose spread has not settled, in the cases' order."""
    wanted = []
    for c in compares:
        if c.row.judged and not settled(row_values(c, samples)):
            wanted += [label for label in c.labels if label not in wanted]
    return wanted


# ---- the bench -----------------------------------------------------------------------------
class Bench:
    def __init__(self, scale, work, rounds=None, max_rounds=None, peer_rounds=None):
        self.scale = scale
        self.work = work
        self.rounds = rounds or scale.rounds
        self.max_rounds = max(max_rounds or scale.max_rounds, self.rounds)
        self.peer_rounds = peer_rounds or scale.peer_rounds
        self.peer_max_rounds = max(scale.peer_max_rounds, self.peer_rounds)
        self.rows = []          # published, in order
        self.pending = []       # declared by the running case, not yet published
        self.loads = []         # 1-minute load averages, one at each case's start
        self.env_plain = {k: v for k, v in os.environ.items()
                          if k != "LD_PRELOAD" and not k.startswith("VDISKIO_")}
        self.env_lib = dict(self.env_plain, LD_PRELOAD=str(LIB))
        self.tools = {}
        self.started = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.started

    def say(self, text):
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def sample_load(self):
        with open("/proc/loadavg") as f:
            self.loads.append(float(f.read().split()[0]))

    # rows: a case declares them first, so a failure can mark every one it was making
    def row(self, case, image, vs, **kw):
        r = Row(case, image, vs, **kw)
        self.pending.append(r)
        return r

    def publish(self):
        for r in self.pending:
            self.rows.append(r)
            self.say("  " + " | ".join(r.cells()))
        self.pending = []

    def fail_pending(self, message):
        message = message.replace(f"{self.work}/", "")
        for r in self.pending:
            if not r.status:
                r.status = f"ERROR: {message}"
        self.publish()

    def measure(self, cmds, compares, rounds=None, max_rounds=None, warmup=False):
        """Run the commands in alternating rounds (see the module's docstring) and fill the
        compares' rows. A warm-up round, when asked, runs everything once untimed.
        Returns label -> {round: Sample}."""
        rounds = rounds or self.rounds
        max_rounds = max(max_rounds or self.max_rounds, rounds)
        samples = {label: {} for label in cmds}
        order = list(cmds)
        try:
            for r in range(-1 if warmup else 0, max_rounds):
                todo = order if r < rounds else labels_to_rerun(compares, samples)
                if not todo:
                    break
                for label in (todo if r % 2 == 0 else todo[::-1]):
                    s = self.run_once(cmds[label])
                    if r >= 0:
                        samples[label][r] = s
        finally:
            for c in compares:
                c.row.values = row_values(c, samples)
        return samples

    def run_once(self, c):
        if c.before:
            c.before()
        extra = None
        try:
            s = run_timed(c.argv, self.env_lib if c.lib else self.env_plain)
        finally:
            if c.after:
                extra = c.after()
        s.extra = extra
        return s

    def compile_tools(self):
        for src in sorted(DRIVERS.glob("*.c")):
            out = self.work / "drivers" / src.stem
            out.parent.mkdir(exist_ok=True)
            run(["gcc", "-O2", "-Wall", "-o", out, src])
            self.tools[src.stem] = out
