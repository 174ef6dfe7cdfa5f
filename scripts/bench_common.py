"""Shared benchmark harness: every arm runs in its own fresh child process.

Why child processes: peak memory is only comparable when each arm starts from an empty
interpreter, and a crash or leak in one arm cannot colour the next. Arms are interleaved
and repeated (round-robin, rotating the start) because the machine is shared and noisy:
ratios measured side by side hold better than absolute times.

A bench script defines ARMS = {"name": fn(params, section) -> dict} and ends with
`child_main(ARMS)` guarded by `is_child()`. The parent calls `run_arm(...)`/`run_arms(...)`.
Inside the child, the code under `with section:` is the timed part; imports and set-up are not.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
RESULTS_DIR = SCRIPTS_DIR / "results"
_CHILD_FLAG = "--bench-child"
_RESULT_ENV = "FORGETCTL_BENCH_RESULT"
# quiet children (and --quick's in-process arms): progress bars would bury the tables
for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)


# ---------------------------------------------------------------------------- child side


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc; 0 when unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it is not inherited from the parent across exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_hwm() -> bool:
    """Reset the peak-RSS mark (Linux >= 4.0), so a section's own peak can be read exactly."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Section:
    """Times the measured part of an arm and measures its peak memory.

    peak_mb: the process's peak RSS during the section (the mark is reset on entry);
    rss_before_mb: RSS on entry (interpreter, libraries and whatever set-up loaded).
    """

    def __init__(self):
        self.seconds = None
        self.rss_before_mb = None
        self.hwm_before_mb = 0.0
        self.peak_mb = None
        self.exact = False
        self._t0 = None

    def __enter__(self):
        self.hwm_before_mb = _hwm_mb()
        self.rss_before_mb = _rss_mb()
        self.exact = _reset_hwm()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        self.peak_mb = _hwm_mb()
        return False

    def to_dict(self) -> dict:
        if self.seconds is None:
            return {}
        return {
            "section_s": self.seconds,
            "rss_before_mb": self.rss_before_mb,
            "section_peak_mb": self.peak_mb,
            "section_peak_above_start_mb": max(0.0, self.peak_mb - self.rss_before_mb),
            "section_peak_exact": self.exact,
        }


def is_child() -> bool:
    return _CHILD_FLAG in sys.argv


def child_main(arms: dict) -> None:
    """Run one arm as asked by the parent and write its result JSON where the parent said."""
    i = sys.argv.index(_CHILD_FLAG)
    name, params = sys.argv[i + 1], json.loads(sys.argv[i + 2])
    section = Section()
    result = arms[name](params, section) or {}
    result.update(section.to_dict())
    # whole-process peak: before the section (set-up) or since its start (the mark was reset there)
    result["process_peak_mb"] = max(section.hwm_before_mb, _hwm_mb())
    Path(os.environ[_RESULT_ENV]).write_text(json.dumps(result, default=float))


# ---------------------------------------------------------------------------- parent side


@dataclass
class Run:
    arm: str
    wall_s: float  # whole child process, measured by the parent
    peak_rss_mb: float  # the child's own peak RSS (VmHWM it reports; else os.wait4's ru_maxrss)
    returncode: int
    stdout: str = ""
    stderr: str = ""
    result: dict = field(default_factory=dict)


def run_command(argv: list[str], *, env: dict | None = None, timeout: float = 3600, cwd=None) -> Run:
    """Run a command; measure its wall time and its own peak RSS (not that of earlier children)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            arm=" ".join(argv),
            wall_s=wall,
            peak_rss_mb=usage.ru_maxrss / 1024,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def run_arm(script, arm: str, params: dict, *, timeout: float = 3600, env: dict | None = None,
            inprocess: dict | None = None) -> Run:
    """Run ARMS[arm](params) of `script` in a fresh interpreter. Raises on failure (with its stderr tail).

    inprocess: the script's ARMS table, to run the arm in this process instead (quick smoke runs only:
    no process isolation, so its memory figures mean little).
    """
    if inprocess is not None:
        section = Section()
        t0 = time.perf_counter()
        result = inprocess[arm](params, section) or {}
        result.update(section.to_dict())
        result["process_peak_mb"] = _hwm_mb()
        return Run(arm, time.perf_counter() - t0, result["process_peak_mb"], 0, result=result)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        run = run_command(
            [sys.executable, str(script), _CHILD_FLAG, arm, json.dumps(params)],
            env=child_env({_RESULT_ENV: str(result_path), **(env or {})}),
            timeout=timeout,
        )
        if run.returncode != 0 or not result_path.is_file():
            tail = "\n".join(run.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"arm {arm!r} failed (exit {run.returncode}):\n{tail}")
        run.result = json.loads(result_path.read_text())
    run.arm = arm
    # wait4's ru_maxrss includes the parent's memory image at exec time: the child's VmHWM does not
    run.peak_rss_mb = run.result.get("process_peak_mb", run.peak_rss_mb)
    return run


def run_arms(script, arms: list[tuple[str, str, dict]], repeats: int, *, timeout: float = 3600,
             inprocess: dict | None = None) -> dict[str, list[Run]]:
    """(label, arm, params) triples, round-robin `repeats` times, rotating which goes first each round."""
    runs: dict[str, list[Run]] = {label: [] for label, _, _ in arms}
    for r in range(repeats):
        k = r % len(arms)
        for label, arm, params in arms[k:] + arms[:k]:
            log(f"round {r + 1}/{repeats}: {label}")
            run = run_arm(script, arm, params, timeout=timeout, inprocess=inprocess)
            run.arm = label
            runs[label].append(run)
    return runs


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> float | None:
    """(max - min) / median: how noisy the repeats of one arm were."""
    values = [v for v in values if v is not None]
    if len(values) < 2 or not statistics.median(values):
        return None
    return (max(values) - min(values)) / statistics.median(values)


# ---------------------------------------------------------------------------- output


def machine_info() -> dict:
    def version(pkg):
        try:
            return metadata.version(pkg)  # no import: the registry bench must not load torch
        except metadata.PackageNotFoundError:
            return None

    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20  # GiB
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "ram_gib": round(mem, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "peft": version("peft"),
        "forgetctl": version("forgetctl"),
        "loadavg_1m": os.getloadavg()[0],
    }


def machine_line(info: dict) -> str:
    return (
        f"{info['date_utc']} · {info['cpu']} · {info['cpu_count']} CPUs · {info['ram_gib']} GiB RAM · "
        f"torch {info['torch']} · python {info['python']} · load avg {info['loadavg_1m']:.2f}"
    )


def fmt(value, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text}{unit}"


def ratio(value, reference) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def print_table(title: str, columns: list[str], rows: list[list], caption: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    console = Console(width=200)
    console.print(table)
    if caption:
        console.print(caption, soft_wrap=True)


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("MET" if ok else "MISSED")


def save_results(name: str, payload: dict, out: str | Path | None = None) -> Path:
    """Write the results JSON (machine info added) atomically; default scripts/results/<name>.json."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), **payload}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite (< 60 s)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of interleaved arms")
    parser.add_argument("--out", default=None, help="results JSON path (default scripts/results/<name>.json)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed after)")
    return parser


@contextmanager
def scratch_dir(args, prefix: str):
    """The run's scratch folder: --workdir when given (kept, so a later run can reuse it), else a new
    temporary folder removed on exit."""
    if args.workdir:
        yield Path(args.workdir)
        return
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def quick_mode_threads() -> None:
    """--quick runs tiny models in-process on a shared CPU: one thread avoids oversubscription stalls."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
