"""How ``kubeloop run`` scales: 1M, 10M and 100M rows x 20 columns, each step under 4 GiB.

For each size the table (``kubeloop.datagen.scale_batches``: a timestamp, 13
numeric and 5 categorical columns and a binary ``label`` drawn from a known
logistic truth) is written as Parquet one row group at a time, so generating
100M rows needs the memory of one batch. It lands in a scratch directory (never
in the repository) and is reused by later runs with the same seed. Then
``kubeloop run`` trains on it with the default configuration, once from the
local file and once from the loopback S3 server (moto, a separate process, as
the tests start it), each run into a fresh registry.

The memory cap: each run is a child cgroup (cgroup v1 memory controller) with a
hard ``memory.limit_in_bytes`` of 4 GiB. The local runner runs one step at a
time, so the cap holds each step, together with the ``kubeloop run`` process
that drives the steps (a few hundred MiB): a step gets a little less than a
4 GiB pod would. A step the kernel kills for the cap is reported as such (which
task, at which size), and the benchmark goes on to the next run.

Reported per step, size and storage: wall time (its process's, start-up
included, from the local runner's log), time per million rows, peak memory (its
``peak_rss_mib``); per run the whole wall time and CPU time, the cgroup's peak
(page cache included) and the test metric, beside the best ROC-AUC any model
can reach on this table (from the true probabilities). Targets, as ratios
measured in this one run:

* a size in at most 0.8x its row ratio of the time of the size before it
  (10M in <= 8x the time of 1M);
* at the smallest size (1M), the largest step's peak above the import floor at
  most 3x the data's in-memory size;
* every step of every run under the cap;
* the test metric never falls as the data grows (beyond a small tolerance).

    python bench/bench_scale.py [--sizes 1M,10M,100M] [--storage local,s3] [--dir DIR]
                                [--run-timeout SECONDS] [--json FILE]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_overhead import import_floor_mib
from bench_storage import ACCESS_KEY, SECRET_KEY, start_moto

MIB = 2**20
CAP_GIB = 4.0
MAX_TIME_PER_ROW_RATIO = 0.8  # 10x the rows in at most 8x the time
MAX_MEMORY_RATIO = 3.0
METRIC_TOLERANCE = 0.005  # ROC-AUC on 150k test rows varies by about 0.001 between seeds
ROW_GROUP_ROWS = 250_000
ORACLE_ROWS = 2_000_000  # rows the best reachable ROC-AUC is computed on
BUCKET = "kubeloop-bench-scale"
MODEL = "scale"


# --- sizes -----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'1M' -> 1_000_000, '50k' -> 50_000, '3000' -> 3000."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r} (use e.g. 1M, 10M, 50k, 3000)")
    rows = float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6}[m.group(2).lower()]
    if rows < 1000 or rows != int(rows):
        raise argparse.ArgumentTypeError(f"a size must be a whole number of rows, at least 1000: {text!r}")
    return int(rows)


def size_label(rows: int) -> str:
    for unit, div in (("M", 10**6), ("k", 10**3)):
        if rows % div == 0:
            return f"{rows // div}{unit}"
    return str(rows)


# --- data ------------------------------------------------------------------------------


def write_table(path: Path, rows: int, seed: int) -> dict[str, Any]:
    """Write the scale table to ``path`` one row group at a time; return what is known
    about it (rows, sizes, the best reachable ROC-AUC). Reused if already written."""
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("rows") == rows and meta.get("seed") == seed:
            return meta
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    from kubeloop.datagen import scale_batches

    t0 = time.perf_counter()
    in_memory = 0
    labels, probs = [], []
    kept = 0
    part = path.with_suffix(".parquet.part")
    writer = None
    try:
        for frame, p_true in scale_batches(rows, seed=seed, batch_rows=ROW_GROUP_ROWS):
            in_memory += int(frame.memory_usage(deep=True, index=False).sum())
            if kept < ORACLE_ROWS:
                labels.append(frame["label"].to_numpy())
                probs.append(p_true)
                kept += len(frame)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(part, table.schema, compression="snappy")
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()
    part.replace(path)
    meta = {
        "rows": rows, "seed": seed, "columns": 20, "row_group_rows": ROW_GROUP_ROWS,
        "parquet_mib": round(path.stat().st_size / MIB, 1), "in_memory_mib": round(in_memory / MIB, 1),
        "best_roc_auc": round(float(roc_auc_score(np.concatenate(labels), np.concatenate(probs))), 4),
        "generated_s": round(time.perf_counter() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta))
    return meta


# --- the memory cap --------------------------------------------------------------------


class MemoryCap:
    """A child cgroup (v1 memory controller) with a hard limit; processes started with
    ``preexec`` join it, and their children with them."""

    ROOT = Path("/sys/fs/cgroup/memory")

    def __init__(self, name: str, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.path: Path | None = None
        self.reason = ""
        own = self._own_group()
        if own is None:
            self.reason = "no cgroup v1 memory controller here"
            return
        path = own / name
        try:
            path.mkdir(exist_ok=True)
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            memsw = path / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # no swapping around the cap either
                memsw.write_text(str(limit_bytes))
        except OSError as exc:
            self.reason = f"cannot make a cgroup under {own}: {exc.strerror or exc}"
            with contextlib.suppress(OSError):
                path.rmdir()
            return
        self.path = path

    @classmethod
    def _own_group(cls) -> Path | None:
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, controllers, group = line.split(":", 2)
                if "memory" in controllers.split(","):
                    own = cls.ROOT / group.lstrip("/")
                    return own if (own / "memory.limit_in_bytes").exists() else None
        except OSError:
            pass
        return None

    @property
    def enforced(self) -> bool:
        return self.path is not None

    def preexec(self) -> None:
        # Runs in the child between fork and exec: it moves itself into the group.
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        if self.path is None:
            return 0
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        # Older kernels have no oom_kill counter: the limit having been hit is the sign.
        return int((self.path / "memory.failcnt").read_text()) and -1

    def peak_mib(self) -> float | None:
        if self.path is None:
            return None
        return int((self.path / "memory.max_usage_in_bytes").read_text()) / MIB

    def close(self) -> None:
        if self.path is None:
            return
        for _ in range(50):  # the last processes may still be exiting
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


# --- one run ---------------------------------------------------------------------------


@dataclass
class RunResult:
    rows: int
    storage: str
    status: str = "ok"  # ok | killed (by the cap) | failed | timeout
    wall_s: float = 0.0
    cpu_s: float | None = None  # user + system of the whole run: less sensitive to a busy machine
    load: list[float] = field(default_factory=list)  # the machine's load average (1, 5, 15 min) at the end
    failed_task: str | None = None
    oom_kills: int = 0
    cgroup_peak_mib: float | None = None
    metric: str | None = None
    value: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""


def _tee(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)
        sys.stderr.write("    " + line)
        sys.stderr.flush()


_TASK_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d(?:\.\d+)?) - \w+ - (?:Executing task '([^']+)'|"
                        r"Task '([^']+)' finished with status (\w+))")


def _clock(h: str, m: str, s: str) -> float:
    return int(h) * 3600 + int(m) * 60 + float(s)


def step_events(log_text: str) -> list[dict[str, Any]]:
    """The steps of one run, in order, from the local runner's log: each task's wall
    time (start-up and imports included, from the runner's timestamps), and from its
    progress line the stage, the step's own seconds and its peak RSS. A task that
    never finished (killed with the run, or the run stopped) has status ``running``."""
    from kubeloop.progress import parse_line

    steps: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for raw in log_text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw)
        m = _TASK_LINE.match(line)
        if m and m.group(4):
            # The stage is named by the step's progress line; a step that never printed
            # one (killed, failed) keeps its task's name, as the stage is called.
            stage = m.group(4).removesuffix("-op").replace("-", "_")
            current = {"task": m.group(4), "stage": stage, "status": "running", "wall_s": None,
                       "seconds": None, "peak_rss_mib": None, "_t": _clock(*m.group(1, 2, 3))}
            steps.append(current)
        elif m and current is not None and m.group(5) == current["task"]:
            wall = _clock(*m.group(1, 2, 3)) - current["_t"]
            current["wall_s"] = round(wall + 86_400 if wall < 0 else wall, 2)  # past midnight
            current["status"] = m.group(6).lower()
            current = None
        elif current is not None:
            parsed = parse_line(line)
            if parsed and parsed[0] == "progress":
                current.update(stage=parsed[1]["stage"], seconds=parsed[1].get("seconds"),
                               peak_rss_mib=parsed[1].get("peak_rss_mib"))
    for step in steps:
        step.pop("_t")
    return steps


def _run_steps(work_dir: Path) -> list[dict[str, Any]]:
    return [s for log in sorted((work_dir / "logs").glob("*.log"))
            for s in step_events(log.read_text(errors="replace"))]


def _children_cpu_s() -> float:
    # The run's steps are reaped by the run, and the run by us: all of its CPU time.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory_refusal(log_text: str) -> str | None:
    """The message of a step that refused to start for its memory limit
    (``MemoryLimitError``: the step sizes its work to the cgroup limit and fails at
    once, naming the key to raise, rather than being killed), if the log has one."""
    for match in re.finditer(r"\[kubeloop:error\] (\{.*\})", log_text):
        try:
            event = json.loads(match.group(1))
        except ValueError:
            continue
        if event.get("error") == "MemoryLimitError":
            return str(event.get("message", ""))
    return None


def run_once(data_uri: str, rows: int, storage: str, work: Path, *, cap_bytes: int,
             env: dict[str, str], extra: list[str], timeout: float | None) -> RunResult:
    label = f"{size_label(rows)}-{storage}"
    work_dir = work / f"work-{label}"
    shutil.rmtree(work_dir, ignore_errors=True)
    registry = (f"s3://{BUCKET}/registry-{label}" if storage == "s3"
                else str(work / f"registry-{label}"))
    if storage != "s3":
        shutil.rmtree(registry, ignore_errors=True)
    cmd = [sys.executable, "-m", "kubeloop.cli", "run", "--data", data_uri, "--target", "label",
           "--task", "classification", "--model-name", MODEL, "--registry", registry,
           "--work-dir", str(work_dir), "--json", *extra]
    cap = MemoryCap(f"kubeloop-bench-scale-{os.getpid()}-{label}", cap_bytes)
    result = RunResult(rows, storage)
    lines: list[str] = []
    work_dir.mkdir(parents=True)
    summary_path = work_dir / "summary.json"
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    try:
        with open(summary_path, "w") as stdout:
            proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env,
                                    preexec_fn=cap.preexec, start_new_session=True)
        reader = threading.Thread(target=_tee, args=(proc.stderr, lines), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The run's own session: its driver and the step it is running.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            result.status = "timeout"
        reader.join(timeout=30)
        result.wall_s = round(time.perf_counter() - t0, 1)
        result.cpu_s = round(_children_cpu_s() - cpu0, 1)
        result.load = [round(x, 2) for x in os.getloadavg()]
        result.oom_kills = cap.oom_kills()
        result.cgroup_peak_mib = cap.peak_mib()
    finally:
        cap.close()
    result.steps = _run_steps(work_dir)
    unfinished = [s["task"] for s in result.steps if s["status"] != "success"]
    failed = re.search(r"Inner task failed: '([^']+)'", "".join(lines))
    result.failed_task = unfinished[-1] if unfinished else (failed.group(1) if failed else None)
    if result.status == "timeout":
        done = result.steps[-1]["stage"] if result.steps else "nothing"
        result.message = f"stopped after {timeout:g} s (last step done: {done})"
    elif proc.returncode != 0:
        logs = "".join(p.read_text(errors="replace") for p in sorted((work_dir / "logs").glob("*.log")))
        refusal = memory_refusal("".join(lines) + logs)
        result.status = "killed" if result.oom_kills else "refused" if refusal else "failed"
        attempts = len(unfinished)
        how = (f"killed by the {cap_bytes / 2**30:g} GiB cap" if result.oom_kills
               else "refused for memory" if refusal else f"exit {proc.returncode}")
        result.message = (
            how
            + (f" in task {result.failed_task!r}" if result.failed_task else "")
            + f" at {size_label(rows)} rows"
            + (f" ({attempts} attempts)" if attempts > 1 else "")
            + (f": {refusal}" if refusal and not result.oom_kills else ""))
    else:
        summary = json.loads(summary_path.read_text().strip().splitlines()[-1])
        result.metric = (summary.get("gate") or {}).get("primary_metric") or "roc_auc"
        result.value = (summary.get("metrics") or {}).get(result.metric)
    if not cap.enforced:
        result.message = (result.message + "; " if result.message else "") + f"cap not enforced: {cap.reason}"
    shutil.rmtree(work_dir / "runs", ignore_errors=True)  # hand-offs: as big as the data
    return result


# --- S3 --------------------------------------------------------------------------------


@contextlib.contextmanager
def loopback_s3(work: Path):
    """A moto server in its own process (outside the cap) and a bucket in it."""
    import boto3

    proc, endpoint = start_moto(work / "moto.log")
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def s3_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true")
    return env


# --- report ----------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def step_table(runs: list[RunResult], storage: str) -> str:
    """One Markdown table per storage: a row per step, per size its wall time (start-up
    included), time per million rows and peak memory; a step that did not finish
    shows how it ended."""
    runs = [r for r in runs if r.storage == storage]
    stages: list[str] = []
    for r in runs:
        for s in r.steps:
            if s["stage"] not in stages:
                stages.append(s["stage"])
    head = "| step | " + " | ".join(f"{size_label(r.rows)} s | s / M rows | peak MiB" for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(runs))]
    for stage in stages:
        cells = []
        for r in runs:
            mine = [s for s in r.steps if s["stage"] == stage]
            done = [s for s in mine if s["status"] == "success"]
            ended = [s["status"] for s in mine if s["status"] != "success"]
            if done:
                secs = sum(s["wall_s"] or s["seconds"] or 0 for s in done)
                peak = max(s["peak_rss_mib"] or 0 for s in done)
                cells += [f"{secs:.1f}", f"{secs / (r.rows / 1e6):.1f}", f"{peak:.0f}"]
            elif mine and mine[-1]["wall_s"]:  # how long it ran before it was killed or failed
                secs = mine[-1]["wall_s"]
                cells += [f"{secs:.1f}", f"{secs / (r.rows / 1e6):.1f}", ""]
            else:
                cells += ["", "", ""]
            if ended:  # killed by the cap, failed, or still running when the run was stopped
                how = {"killed": "KILLED by the cap", "refused": "REFUSED for memory",
                       "timeout": "stopped (timeout)"}.get(r.status, ended[-1])
                cells[-1] += f" **{how}**" + (f" x{len(ended)}" if len(ended) > 1 else "")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| **whole run** | " + " | ".join(
        f"**{r.wall_s:.0f}**{'' if r.status == 'ok' else ' ' + r.status.upper()}"
        f"{f' (CPU {r.cpu_s:.0f})' if r.cpu_s else ''} | "
        f"{r.wall_s / (r.rows / 1e6):.1f} | {_f(r.cgroup_peak_mib, '.0f')} (cgroup)" for r in runs) + " |")
    lines.append("| test metric | " + " | ".join(
        f"{r.metric or '-'} {_f(r.value, '.4f')} | | " for r in runs) + " |")
    return "\n".join(lines)


def check_targets(runs: list[RunResult], meta: dict[int, dict[str, Any]], floor: float,
                  cap_mib: float, tolerance: float) -> tuple[list[str], bool]:
    """Lines stating each target and whether it was met, and whether all were."""
    lines, ok = [], True

    def verdict(good: bool) -> str:
        return "ok" if good else "MISSED"

    for storage in dict.fromkeys(r.storage for r in runs):
        mine = sorted((r for r in runs if r.storage == storage), key=lambda r: r.rows)
        for small, big in zip(mine, mine[1:], strict=False):
            limit = MAX_TIME_PER_ROW_RATIO * big.rows / small.rows
            name = f"[{storage}] time {size_label(big.rows)} / {size_label(small.rows)}"
            if small.status == "ok" and big.status == "ok":
                ratio = big.wall_s / small.wall_s
                cpu = (f", CPU time {big.cpu_s / small.cpu_s:.2f}x" if big.cpu_s and small.cpu_s else "")
                lines.append(f"{name:<34} {ratio:6.2f}x  (target <= {limit:g}x{cpu})  {verdict(ratio <= limit)}")
                ok &= ratio <= limit
            else:
                lines.append(f"{name:<34}    n/a  (target <= {limit:g}x)  MISSED: "
                             f"{size_label(big.rows if big.status != 'ok' else small.rows)} did not complete")
                ok = False
        first = mine[0]
        name = f"[{storage}] memory at {size_label(first.rows)}"
        if first.steps:
            top = max(first.steps, key=lambda s: s["peak_rss_mib"] or 0)
            ratio = ((top["peak_rss_mib"] or 0) - floor) / meta[first.rows]["in_memory_mib"]
            good = ratio <= MAX_MEMORY_RATIO and first.status == "ok"
            lines.append(f"{name:<34} {ratio:6.2f}x  (largest step {top['stage']}: (peak - floor) / data, "
                         f"target <= {MAX_MEMORY_RATIO:g}x)  {verdict(good)}")
            ok &= good
        for r in mine:
            peaks = [s["peak_rss_mib"] or 0 for s in r.steps]
            over = [s["stage"] for s in r.steps if (s["peak_rss_mib"] or 0) >= cap_mib]
            good = r.status == "ok" and not over
            why = (f"every step under {cap_mib / 1024:g} GiB (largest {max(peaks, default=0):.0f} MiB)" if good
                   else r.message or f"over the cap: {', '.join(over)}")
            lines.append(f"[{storage}] {size_label(r.rows):>5} under the cap        {verdict(good)}: {why}")
            ok &= good
        scored = [r for r in mine if r.value is not None]
        if scored:
            base = scored[0]
            for r in scored[1:]:
                good = r.value >= base.value - tolerance
                lines.append(f"[{storage}] {r.metric} {size_label(r.rows)} vs {size_label(base.rows)}"
                             f"{'':<10} {r.value:.4f} vs {base.value:.4f} (may fall at most {tolerance:g})  "
                             f"{verdict(good)}")
                ok &= good
    return lines, ok


def step_verdicts(runs: list[RunResult], meta: dict[int, dict[str, Any]], floor: float) -> list[str]:
    """Which steps miss the targets, and by how much: at the smallest size each step's
    peak above the floor against the data, and between sizes each step's time ratio."""
    lines = []
    for storage in dict.fromkeys(r.storage for r in runs):
        mine = sorted((r for r in runs if r.storage == storage), key=lambda r: r.rows)
        first = mine[0]
        data = meta[first.rows]["in_memory_mib"]
        over = [(s["stage"], ((s["peak_rss_mib"] or 0) - floor) / data) for s in first.steps
                if s["status"] == "success" and ((s["peak_rss_mib"] or 0) - floor) / data > MAX_MEMORY_RATIO]
        lines.append(f"[{storage}] steps over {MAX_MEMORY_RATIO:g}x the data at {size_label(first.rows)}: "
                     + (", ".join(f"{name} {ratio:.2f}x" for name, ratio in over) or "none"))
        for small, big in zip(mine, mine[1:], strict=False):
            limit = MAX_TIME_PER_ROW_RATIO * big.rows / small.rows

            def wall(run: RunResult, stage: str) -> float:
                return sum(s["wall_s"] or 0 for s in run.steps if s["stage"] == stage and s["status"] == "success")

            slow = [(s, wall(big, s) / wall(small, s)) for s in dict.fromkeys(x["stage"] for x in big.steps)
                    if wall(small, s) > 0 and wall(big, s) > 0 and wall(big, s) / wall(small, s) > limit]
            lines.append(f"[{storage}] steps over {limit:g}x the time from {size_label(small.rows)} to "
                         f"{size_label(big.rows)}: " + (", ".join(f"{n} {r:.1f}x" for n, r in slow) or "none"))
    return lines


def report(runs: list[RunResult], meta: dict[int, dict[str, Any]], floor: float, cap_gib: float,
           tolerance: float) -> tuple[list[str], bool]:
    """Print the step tables and the targets; return the target lines and whether all were met."""
    print(f"\nimport floor {floor:.0f} MiB; cap {cap_gib:g} GiB per run (the kubeloop run process and the "
          f"one step it runs); a step's time is its process's, start-up included")
    for storage in dict.fromkeys(r.storage for r in runs):
        print(f"\n[{storage}]\n" + step_table(runs, storage))
    lines, ok = check_targets(runs, meta, floor, cap_gib * 1024, tolerance)
    print("\n" + "\n".join(lines + step_verdicts(runs, meta, floor)))
    return lines, ok


def reprint(path: str, work: Path | None, tolerance: float) -> int:
    """The tables and targets of a saved ``--json`` file, its steps re-read from the
    runs' logs when ``work`` still holds them."""
    saved = json.loads(Path(path).read_text())
    runs = [RunResult(**r) for r in saved["runs"]]
    for r in runs:
        work_dir = work / f"work-{size_label(r.rows)}-{r.storage}" if work else None
        if work_dir and (work_dir / "logs").is_dir():
            r.steps = _run_steps(work_dir)
    meta = {parse_size(k): v for k, v in saved["data"].items()}
    _, ok = report(runs, meta, saved["floor_mib"], saved["cap_gib"], tolerance)
    print("PASS" if ok else "FAIL: a target was missed")
    return 0 if ok else 1


def save(path: str, floor: float, cap_gib: float, meta: dict[int, dict[str, Any]], runs: list[RunResult],
         **verdict: Any) -> None:
    Path(path).write_text(json.dumps(
        {"floor_mib": floor, "cap_gib": cap_gib, "data": {size_label(k): v for k, v in meta.items()},
         "runs": [asdict(r) for r in runs], **verdict}, indent=2))


# --- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,10M,100M", help="row counts, comma-separated (default 1M,10M,100M)")
    ap.add_argument("--storage", default="local,s3", help="where the data is read from: local, s3 or both")
    ap.add_argument("--dir", help="scratch directory: the generated tables are kept and reused there "
                                  "(default: a temporary directory, removed at the end)")
    ap.add_argument("--cap-gib", type=float, default=CAP_GIB, help="hard memory cap of each run (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-timeout", type=float, default=0, help="stop a run after this many seconds (0: never)")
    ap.add_argument("--metric-tolerance", type=float, default=METRIC_TOLERANCE)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--report", metavar="JSON", help="print the tables and targets of a saved --json file "
                                                     "again (with --dir: steps re-read from the runs' logs)")
    args = ap.parse_args(argv)
    if args.report:
        return reprint(args.report, Path(args.dir) if args.dir else None, args.metric_tolerance)
    try:
        sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    except argparse.ArgumentTypeError as exc:
        ap.error(str(exc))
    storages = [s.strip() for s in args.storage.split(",") if s.strip()]
    if not sizes or not storages or set(storages) - {"local", "s3"}:
        ap.error("--sizes needs at least one size and --storage is local, s3 or local,s3")

    work = Path(args.dir or tempfile.mkdtemp(prefix="kubeloop-bench-scale-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cap_bytes = int(args.cap_gib * 2**30)
    timeout = args.run_timeout or None
    floor = import_floor_mib()
    print(f"import floor: peak RSS {floor:.0f} MiB (the libraries alone)", flush=True)
    meta: dict[int, dict[str, Any]] = {}
    runs: list[RunResult] = []
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(loopback_s3(work)) if "s3" in storages else None
        for rows in sizes:
            path = work / f"scale-{size_label(rows)}.parquet"
            meta[rows] = m = write_table(path, rows, args.seed)
            print(f"\n{size_label(rows)}: {rows:,} rows x 20 columns, {m['parquet_mib']:.0f} MiB Parquet, "
                  f"{m['in_memory_mib']:.0f} MiB in memory, best reachable ROC-AUC {m['best_roc_auc']:.4f}",
                  flush=True)
            for storage in storages:
                if storage == "s3":
                    endpoint, client = s3
                    key = path.name
                    t0 = time.perf_counter()
                    client.upload_file(str(path), BUCKET, key)
                    print(f"  uploaded to s3://{BUCKET}/{key} in {time.perf_counter() - t0:.0f}s", flush=True)
                    uri, env, extra = f"s3://{BUCKET}/{key}", s3_env(), ["--s3-endpoint", endpoint]
                else:
                    uri, env, extra = str(path), dict(os.environ), []
                print(f"  kubeloop run on {uri} (cap {args.cap_gib:g} GiB)", flush=True)
                r = run_once(uri, rows, storage, work, cap_bytes=cap_bytes, env=env, extra=extra,
                             timeout=timeout)
                if storage == "s3":
                    client.delete_object(Bucket=BUCKET, Key=key)  # moto holds objects: free it
                runs.append(r)
                if args.json:  # after every run: a long benchmark stopped halfway keeps what it measured
                    save(args.json, floor, args.cap_gib, meta, runs)
                print(f"  -> {r.status} in {r.wall_s:.0f}s"
                      + (f", {r.metric} {r.value:.4f}" if r.value is not None else "")
                      + (f" ({r.message})" if r.message else ""), flush=True)

    lines, ok = report(runs, meta, floor, args.cap_gib, args.metric_tolerance)
    if args.json:
        save(args.json, floor, args.cap_gib, meta, runs, targets=lines, ok=ok)
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS" if ok else "FAIL: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
