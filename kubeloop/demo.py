"""``make demo``: the whole loop on this machine, with no servers to install.

1. train    generate churn data; ``kubeloop run``: with no production model yet, the
            challenger must beat the trivial baseline, and becomes production v1.
2. serve    ``kubeloop serve`` runs production in the background (KServe's model
            server); a few hundred real requests, each answer logged as Parquet.
3. retrain  newer data; ``kubeloop run`` again: the gate compares the challenger v2
            with v1 on the same test rows. Serving restarts with ``--shadow v2``:
            v1 still answers, v2 scores every request too, both logged per request.
4. drift    customers who behave differently reach production; the server stops
            (SIGTERM), which flushes the prediction log.
5. monitor  ``kubeloop drift`` compares the logged traffic with the training profile;
            ``kubeloop monitor`` sees drift on features the model relies on, runs the
            retraining branch on the newest data, and its gate decides.
6. summary  what happened at each step, and where to look.

Every step is the command a user would type, printed before it runs.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from kubeloop.datagen import make_churn
from kubeloop.registry import Registry

MODEL = "churn"
TARGET = "churned"
TIME_COLUMN = "signup_date"
# How far the drifted customers move (kubeloop.datagen: 0 none, 1 strong): prices
# rise, support calls grow, customers move to mobile and monthly contracts, and the
# relation between those and churn changes.
DRIFT = 1.5
# Generous bounds: a busy 2-core laptop is slow, but nothing may hang forever.
COMMAND_TIMEOUT = 1800
READY_TIMEOUT = 180
STOP_TIMEOUT = 30

OUT = sys.stdout  # the narrative; stderr when --json keeps stdout for the summary


def say(text: str = "") -> None:
    print(text, file=OUT, flush=True)


def shown(path: Path | str) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(args.dir).resolve()
        self.registry = self.root / "registry"
        self.logs = self.root / "logs"
        exe = Path(sys.executable).parent / "kubeloop"
        # The installed command next to this interpreter (the venv is not activated
        # under `make demo`); a checkout without the script runs the module instead.
        self.kubeloop = [str(exe)] if exe.exists() else [sys.executable, "-m", "kubeloop.cli"]
        self.kubeloop_shown = [shown(exe)] if exe.exists() else ["python", "-m", "kubeloop.cli"]
        self.port = args.port or free_port()
        self.server: subprocess.Popen | None = None
        self.server_log = None
        self.servers_started = 0
        self.request_seq = 0
        self.summary: dict[str, Any] = {"dir": str(self.root), "model": MODEL, "steps": {}}

    # ---------------------------------------------------------------- commands

    def command(self, *words: str) -> list[str]:
        return [*self.kubeloop, *words]

    def show(self, cmd: list[str]) -> None:
        n = len(self.kubeloop)
        words = self.kubeloop_shown + [shown(w) if w.startswith(str(self.root)) else w for w in cmd[n:]]
        say(f"\n$ {shlex.join(words)}")

    def run(self, *words: str, parse_json: bool = True) -> Any:
        """Run a kubeloop command in the foreground: its progress goes to the terminal,
        its JSON (stdout) comes back."""
        cmd = self.command(*words)
        self.show(cmd)
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"the command above did not finish within {COMMAND_TIMEOUT}s") from None
        if proc.returncode != 0:
            if proc.stdout.strip():
                print(proc.stdout, file=sys.stderr)
            raise DemoFailed(f"the command above failed with exit code {proc.returncode}")
        return json.loads(proc.stdout) if parse_json else proc.stdout

    # ---------------------------------------------------------------- serving

    def serve(self, model_ref: str, *extra: str) -> None:
        """``kubeloop serve`` in the background; returns once /v2/health/ready answers."""
        self.servers_started += 1
        log_path = self.root / f"server-{self.servers_started}.log"
        cmd = self.command("serve", "--model", model_ref, "--registry", str(self.registry),
                           "--port", str(self.port), "--log-to", str(self.logs), *extra)
        self.show(cmd)
        say(f"  (in the background; its own log goes to {shown(log_path)})")
        say(f"  KServe's model server listens on ALL network interfaces (0.0.0.0:{self.port}), not only on "
            "localhost:\n  on a shared network, put a firewall in front of it.")
        self.server_log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        # Its own session: a Ctrl-C in the terminal reaches the demo, which then stops
        # the server with SIGTERM (so it flushes its prediction log) instead of killing it.
        self.server = subprocess.Popen(cmd, stdout=self.server_log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        t0 = time.monotonic()
        url = f"http://localhost:{self.port}/v2/health/ready"
        while True:
            if self.server.poll() is not None:
                tail = log_path.read_text()[-2000:]
                raise DemoFailed(f"the server exited with code {self.server.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() - t0 > READY_TIMEOUT:
                raise DemoFailed(f"the server was not ready within {READY_TIMEOUT}s; see {log_path}")
            time.sleep(0.3)
        say(f"  ready after {time.monotonic() - t0:.1f}s: curl localhost:{self.port}/v2/health/ready answers 200")

    def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod: KServe unloads the model and the
        prediction log writes its last batch. SIGKILL only if it hangs."""
        server, self.server = self.server, None
        if server is None:
            return
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=STOP_TIMEOUT)
        if self.server_log:
            self.server_log.close()
            self.server_log = None

    def predict(self, rows: list[dict[str, Any]], request_id: str) -> tuple[int, dict[str, Any], float]:
        """POST rows to KServe v1; (status, answer, milliseconds). A 400 is an answer too."""
        body = json.dumps({"instances": rows}).encode()
        req = urllib.request.Request(
            f"http://localhost:{self.port}/v1/models/{MODEL}:predict", data=body, method="POST",
            headers={"content-type": "application/json", "x-request-id": request_id})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        return status, json.loads(text), (time.perf_counter() - t0) * 1000

    def traffic(self, df: pd.DataFrame, prefix: str, what: str) -> dict[str, Any]:
        """Send ``df`` a few rows per request; every answer must be a 200."""
        per = self.args.rows_per_request
        n_requests = min(self.args.requests, max(1, len(df) // per))
        say(f"  sending {n_requests} requests of {per} rows each ({what}) ...")
        latencies, versions, positives, t0 = [], set(), 0, time.monotonic()
        for i in range(n_requests):
            rows = records(df.iloc[i * per:(i + 1) * per])
            status, answer, ms = self.predict(rows, f"{prefix}-{i:04d}")
            if status != 200:
                raise DemoFailed(f"request {prefix}-{i:04d} got {status}: {answer}")
            latencies.append(ms)
            versions.add(answer.get("version"))
            positives += sum(p == "yes" for p in answer["predictions"])
        n_rows = n_requests * per
        p50 = statistics.median(latencies)
        say(f"  {n_requests} requests ({n_rows:,} rows) answered by {', '.join(sorted(versions))} in "
            f"{time.monotonic() - t0:.1f}s; median latency {p50:.1f} ms; predicted churn for "
            f"{positives / n_rows:.0%} of the rows")
        return {"requests": n_requests, "rows": n_rows, "median_ms": round(p50, 2),
                "versions": sorted(versions), "predicted_positive_share": round(positives / n_rows, 4)}


class DemoFailed(Exception):
    pass


def free_port() -> int:
    # KServe binds every interface, so the port must be free on all of them.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as the JSON a client sends: ISO 8601 times, null for missing values."""
    return json.loads(df.to_json(orient="records", date_format="iso", date_unit="s"))


def features_of(registry: Path, version: str) -> list[str]:
    meta = json.loads((registry / MODEL / "versions" / version / "model" / "kubeloop.json").read_text())
    return [f["name"] for f in meta["features"]]


def curl(port: int, request_id: str, row: dict[str, Any]) -> str:
    body = json.dumps({"instances": [row]})
    return (f"curl -s localhost:{port}/v1/models/{MODEL}:predict -H 'x-request-id: {request_id}' \\\n"
            f"     -d {shlex.quote(body)}")


def gate_line(gate: dict[str, Any]) -> str:
    return f"{gate['decision'].upper()}: {gate['reason']}"


def heading(n: int, title: str) -> None:
    say(f"\n{'=' * 78}\n{n}. {title}\n{'=' * 78}")


# ----------------------------------------------------------------------- the loop


def main(argv: list[str] | None = None) -> int:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="demo", help="where data, registry, logs and reports go (default: demo)")
    ap.add_argument("--rows", type=int, default=6000, help="rows of the first dataset; later ones get half (default 6000)")
    ap.add_argument("--requests", type=int, default=300, help="requests per round of traffic (default 300)")
    ap.add_argument("--rows-per-request", type=int, default=4, help="rows in each request (default 4)")
    ap.add_argument("--port", type=int, default=0, help="HTTP port of the server (default: a free one)")
    ap.add_argument("--json", action="store_true", help="end with a one-line JSON summary on stdout")
    args = ap.parse_args(argv)
    if args.rows < 400 or args.requests < 1 or args.rows_per_request < 1:
        ap.error("--rows must be at least 400, --requests and --rows-per-request at least 1")
    if args.json:
        OUT = sys.stderr

    demo = Demo(args)
    atexit.register(demo.stop)

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    t0 = time.monotonic()
    try:
        loop(demo)
    except DemoFailed as exc:
        demo.stop()
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        demo.stop()
        print("\ndemo: interrupted; no server is left running", file=sys.stderr)
        return 130
    finally:
        demo.stop()
    demo.summary["seconds"] = round(time.monotonic() - t0, 1)
    final_summary(demo)
    if args.json:
        print(json.dumps(demo.summary, allow_nan=False), flush=True)
    return 0


def loop(demo: Demo) -> None:
    args, root, registry, steps = demo.args, demo.root, demo.registry, demo.summary["steps"]
    if (registry / MODEL).exists() or demo.logs.exists():
        # Another demo's registry would make this one's first model v4, not v1.
        raise DemoFailed(f"{shown(root)} holds an earlier demo's registry or logs; remove it "
                         f"(rm -rf {shlex.quote(shown(root))}) or choose another --dir")
    root.mkdir(parents=True, exist_ok=True)
    say(f"kubeloop demo in {shown(root) or '.'}: train, serve, retrain, drift, monitor, retrain.")

    # -- the data: three periods of customers. Every dataset has held-out customers
    # of its period that the models never see, who become the live traffic.
    n1, n2 = args.rows, args.rows // 2
    hold = args.requests * args.rows_per_request + 1  # + the row of the curl example
    first = make_churn(n1 + hold, seed=7, start="2024-07-01")
    later = make_churn(n2 + hold, seed=8, start="2025-10-01", drift=0.3)
    newest = make_churn(n2 + hold, seed=9, start="2026-07-01", drift=DRIFT)
    first, traffic1 = first.iloc[:n1], first.iloc[n1:]
    later, traffic2 = later.iloc[:n2], later.iloc[n2:]
    newest, traffic3 = newest.iloc[:n2], newest.iloc[n2:]
    data1 = root / "churn-2025.csv"
    data2 = root / "churn-2025-2026q1.parquet"
    data3 = root / "churn-2025-2027.parquet"
    first.to_csv(data1, index=False)
    pd.concat([first, later], ignore_index=True).to_parquet(data2, index=False)
    pd.concat([first, later, newest], ignore_index=True).to_parquet(data3, index=False)

    run_flags = ["--target", TARGET, "--time-column", TIME_COLUMN, "--model-name", MODEL,
                 "--registry", str(registry), "--work-dir", str(root / ".kubeloop"), "--json"]

    # ------------------------------------------------------------------ 1. train
    heading(1, "Train: the first model becomes production")
    say(f"{shown(data1)}: {len(first):,} customers who signed up from July 2024 to December 2025,\n"
        f"generated by kubeloop.datagen (numbers, categories, missing values, about 20 % churned).")
    t = time.monotonic()
    s1 = demo.run("run", "--data", str(data1), *run_flags)
    say(f"\n-> {MODEL} {s1['version']} ({s1['family']}), gate {gate_line(s1['gate'])}")
    say(f"   production is now {s1['production_version']}")
    steps["train"] = {"version": s1["version"], "family": s1["family"], "decision": s1["gate"]["decision"],
                      "production": s1["production_version"], "roc_auc": s1["metrics"].get("roc_auc"),
                      "seconds": round(time.monotonic() - t, 1)}

    # ------------------------------------------------------------------ 2. serve
    heading(2, "Serve production and send it traffic")
    t = time.monotonic()
    demo.serve(MODEL)
    features = features_of(registry, s1["production_version"])
    one = records(traffic1[features].iloc[[0]])[0]
    say("\nOne request, as curl would send it (KServe v1; several rows per request work the same):")
    say("$ " + curl(demo.port, "demo-curl-1", one))
    status, answer, _ = demo.predict([one], "demo-curl-1")
    say(json.dumps(answer))
    bad = {**one, "age": "fifty", "zipcode": "10115"}
    bad.pop("plan")
    say("\nA bad request (age as text, an unknown field, plan missing) gets a 400 naming each problem:")
    say("$ " + curl(demo.port, "demo-curl-2", bad))
    bad_status, bad_answer, _ = demo.predict([bad], "demo-curl-2")
    say(f"HTTP {bad_status}\n{json.dumps(bad_answer)}")
    if status != 200 or bad_status != 400:
        raise DemoFailed(f"expected 200 and 400, got {status} and {bad_status}")
    say("")
    sent = demo.traffic(traffic1[features].iloc[1:], "live", "held-out customers of the training period")
    say(f"  every answer is logged as Parquet under {shown(demo.logs / MODEL)}/ (in batches every 5 s, and on shutdown)")
    steps["serve"] = {"version": s1["production_version"], "port": demo.port, **sent,
                      "rejected_status": bad_status, "rejected_reasons": sorted(
                          {p["reason"] for p in bad_answer.get("problems", [])}),
                      "seconds": round(time.monotonic() - t, 1)}

    # ------------------------------------------------------------------ 3. retrain
    heading(3, "Newer data: a challenger, judged by the gate, then watched in shadow")
    say(f"{shown(data2)}: the same customers plus {len(later):,} newer ones (October 2025 on), whose\n"
        "behaviour has shifted a little. The server keeps answering while this trains.")
    t = time.monotonic()
    s2 = demo.run("run", "--data", str(data2), *run_flags)
    g2 = s2["gate"]
    say(f"\n-> {MODEL} {s2['version']} ({s2['family']}), gate {gate_line(g2)}")
    say(f"   production is {s2['production_version']}")
    served = s1["production_version"]
    steps["retrain"] = {"version": s2["version"], "family": s2["family"], "decision": g2["decision"],
                        "estimate": g2.get("estimate"), "low": g2.get("low"), "high": g2.get("high"),
                        "n_rows": g2.get("n_rows"), "production": s2["production_version"]}
    if s2["version"] != served:
        v2 = s2["version"]
        if s2["production_version"] != served:
            say(f"\nThe registry's production alias now names {v2}, but the running server still serves {served}:\n"
                f"traffic moves only when a version is served. Before that, watch {v2} on live traffic.")
        else:
            say(f"\n{v2} stays out of production. It can still be watched on live traffic.")
        say(f"Restart the server on {served} with {v2} as its shadow: {served} answers every request, {v2} scores it\n"
            "too, off the request path, and both answers are logged under the same request id.\n"
            f"(On a cluster, `kubeloop deploy {MODEL}@{v2} --canary-percent 10` sends it a share as a KServe canary.)")
        demo.stop()
        demo.serve(f"{MODEL}@{served}", "--shadow", s2["version"])
        demo.traffic(traffic2[features], "shadow", "newer customers")
        say(f"  stopping the server (SIGTERM) writes the last of its prediction log ({shown(demo.logs)}/)")
        demo.stop()
        steps["retrain"]["shadow"] = compare_shadow(demo.logs, served, s2["version"])
    steps["retrain"]["seconds"] = round(time.monotonic() - t, 1)

    # ------------------------------------------------------------------ 4. drift
    heading(4, "Customers change: drifted traffic reaches production")
    production = s2["production_version"]
    say(f"New customers (July 2026 on) pay more, call support more often and move to mobile and monthly\n"
        f"contracts (kubeloop.datagen's drift={DRIFT}). They reach production, which is {production}"
        + (f" now: serve it\n({MODEL} alone means {MODEL}@production)." if production != served else "."))
    t = time.monotonic()
    earlier_logs = set((demo.logs / MODEL).rglob("*.parquet"))
    round_started = time.time()  # the monitoring window opens here
    demo.serve(MODEL)
    sent = demo.traffic(traffic3[features], "drifted", "drifted customers")
    say(f"  stopping the server (SIGTERM) writes the last of its prediction log ({shown(demo.logs)}/)")
    demo.stop()
    files = sorted((demo.logs / MODEL).rglob("*.parquet"))
    say(f"  the prediction log now holds {len(files)} Parquet files under {shown(demo.logs / MODEL)}/date=.../")
    steps["drifted_traffic"] = {"version": production, **sent, "log_files": len(files),
                                "seconds": round(time.monotonic() - t, 1)}

    # ------------------------------------------------------------------ 5. monitor
    heading(5, "Monitor: drift, the retraining policy, and the gate again")
    t = time.monotonic()
    drift_html = root / "drift.html"
    # The last round's log files on their own: the earlier rounds' customers would
    # dilute the shift a monitoring window is meant to see.
    window = root / "drifted-window"
    for f in files:
        if f not in earlier_logs:
            target = window / f.relative_to(demo.logs / MODEL)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    say(f"Which columns of the logged traffic differ from the data {production} was trained on? kubeloop drift\n"
        f"reads the answers of the last round ({shown(window)}/); the HTML report shows each column.")
    d = demo.run("drift", "--reference", f"model:{MODEL}@production", "--current", str(window),
                 "--registry", str(registry), "--report", str(drift_html), "--json")
    steps["drift"] = {"drifted_columns": d["drifted_columns"], "n_columns": d["n_columns"],
                      "report": str(drift_html), "seconds": round(time.monotonic() - t, 1)}

    config = root / "monitoring.yaml"
    config.write_text(
        "# The demo retrains minutes after the last training; the default policy waits\n"
        "# 24 hours between retrains (monitoring.cooldown_hours). It has no label feed,\n"
        "# so no labels can arrive: drift and new training data are its evidence\n"
        "# (the default waits for 200 new labels, monitoring.min_labeled_rows).\n"
        "monitoring:\n  cooldown_hours: 0\n  min_labeled_rows: 0\n")
    say(f"\nkubeloop monitor looks only at what production ({production}) answered, compares it with the profile\n"
        "stored with that version, and its policy retrains when a feature the model relies on drifted\n"
        f"(its config, {shown(config)}, sets monitoring.cooldown_hours: 0 so the demo need not wait a\n"
        "day, and min_labeled_rows: 0 as it has no labels). Retraining runs the whole training pipeline\n"
        "on the newest data, gate included:")
    t = time.monotonic()
    # The window is the last round: a monitoring run sees recent traffic, not every
    # answer since the first deployment (which would dilute the shift threefold).
    window_hours = (time.time() - round_started + 1.0) / 3600
    m = demo.run("monitor", "--model", MODEL, "--logs", str(demo.logs), "--retrain-data", str(data3),
                 "--window-hours", f"{window_hours:.6f}",
                 "--registry", str(registry), "--config", str(config),
                 "--report-dir", str(root / "monitoring"), "--work-dir", str(root / ".kubeloop"), "--json")
    steps["monitor"] = {"retrain": m["retrain"], "retrained": m["retrained"],
                        "drifted_columns": m["verdict"].get("drifted_columns") or [],
                        "reasons": m["verdict"].get("reasons"), "report": m["report"],
                        "seconds": round(time.monotonic() - t, 1)}
    reg = Registry(str(registry))
    newest_v = reg.list_versions(MODEL)[-1]
    if m["retrained"]:
        gate = newest_v.metadata.get("gate") or {}
        steps["monitor"].update(version=newest_v.version, decision=gate.get("decision"), reason=gate.get("reason"))
        say(f"\n-> the retraining branch ran: {MODEL} {newest_v.version}, gate {gate_line(gate)}")
    demo.summary["production_version"] = reg.get_alias(MODEL, "production")

    # ------------------------------------------------------------------ 6. summary
    heading(6, "What the registry holds now")
    say(demo.run("registry", "list", MODEL, "--registry", str(registry), parse_json=False).rstrip())
    say(demo.run("registry", "history", MODEL, "--registry", str(registry), parse_json=False).rstrip())


def compare_shadow(logs: Path, primary: str, shadow: str) -> dict[str, Any]:
    """Join the served and the shadow answers on (request_id, row) from the log."""
    from kubeloop.serving.logs import read_logs

    df = read_logs(logs, MODEL)
    df = df[df["status"] == "ok"]
    a = df[(df["version"] == primary) & (df["role"] != "shadow")]
    b = df[(df["version"] == shadow) & (df["role"] == "shadow")]
    both = a.merge(b, on=["request_id", "row"], suffixes=("_served", "_shadow"))
    if both.empty:
        say("  no shadow answers in the log")
        return {"version": shadow, "rows": 0}
    agree = float((both["prediction_served"] == both["prediction_shadow"]).mean())
    gap = float((both["proba_yes_served"] - both["proba_yes_shadow"]).abs().mean())
    say(f"\n  from the log: {len(both):,} rows answered by {primary} and scored by {shadow} under the same request ids")
    say(f"  {'request_id':<14}{'row':>4}  {primary + ' answered':<18}{shadow + ' in shadow':<18}")
    for _, r in both.head(4).iterrows():
        say(f"  {r['request_id']:<14}{r['row']:>4}  {r['prediction_served']:<4} p(yes) {r['proba_yes_served']:.2f}"
            f"     {r['prediction_shadow']:<4} p(yes) {r['proba_yes_shadow']:.2f}")
    say(f"  they agree on {agree:.1%} of the rows; p(yes) differs by {gap:.3f} on average")
    return {"version": shadow, "rows": int(len(both)), "agreement": round(agree, 4), "mean_proba_gap": round(gap, 4)}


def final_summary(demo: Demo) -> None:
    s, root, k = demo.summary["steps"], demo.root, " ".join(demo.kubeloop_shown)
    reg = shown(demo.registry)
    train, serve, retrain, drifted = s["train"], s["serve"], s["retrain"], s["drifted_traffic"]
    drift, mon = s["drift"], s["monitor"]
    shadow = retrain.get("shadow") or {}
    lines = [
        f"\n{'=' * 78}\nkubeloop demo finished in {demo.summary['seconds']:.0f}s\n{'=' * 78}",
        f"1. train     {train['version']} {train['family']}: {train['decision']} over the baseline; "
        f"production -> {train['production']}",
        f"2. serve     {serve['requests']} requests ({serve['rows']:,} rows) to {serve['version']}, "
        f"median {serve['median_ms']:.1f} ms; a bad request got {serve['rejected_status']}",
        f"3. retrain   {retrain['version']} {retrain['family']}: {retrain['decision']} "
        f"(roc_auc {fmt(retrain.get('estimate'))}, 95% interval {fmt(retrain.get('low'))} to "
        f"{fmt(retrain.get('high'))}, {retrain.get('n_rows') or 0:,} rows)",
    ]
    if shadow.get("rows"):
        lines.append(f"            in shadow: agrees with {train['production']} on {shadow['agreement']:.1%} "
                     f"of {shadow['rows']:,} rows")
    lines += [
        f"4. drift     {drifted['requests']} requests ({drifted['rows']:,} rows) of drifted customers "
        f"to {drifted['version']}",
        f"5. monitor   drift in the whole log: {', '.join(drift['drifted_columns']) or 'none'}",
        f"            in what {drifted['version']} answered: {', '.join(mon['drifted_columns']) or 'none'}",
        f"            policy: {'RETRAIN' if mon['retrain'] else 'no retraining'}"
        + (f" ({'; '.join(mon['reasons'])})" if mon.get("reasons") else ""),
    ]
    if mon.get("version"):
        lines.append(f"            retrained {mon['version']}: {mon['decision']}; production is "
                     f"{demo.summary['production_version']}")
    lines += [
        "",
        "Where to look:",
        f"  model card         {shown(demo.registry / MODEL / 'versions' / demo.summary['production_version'] / 'model_card.md')}",
        f"  drift report       {shown(drift['report'])}   (open it in a browser)",
        f"  monitoring report  {shown(mon['report'])}",
        f"  prediction logs    {shown(demo.logs / MODEL)}/date=*/part-*.parquet   (one row per scored row)",
        f"  registry           {k} registry list {MODEL} --registry {reg}",
        f"  alias history      {k} registry history {MODEL} --registry {reg}",
        f"  serve it yourself  {k} serve --model {MODEL} --registry {reg} --port 8080 --log-to {shown(demo.logs)}",
        f"  your own data      {k} run --data FILE.csv --target COLUMN",
        f"  server output      {shown(root)}/server-*.log",
    ]
    say("\n".join(lines))


def fmt(x: Any) -> str:
    return f"{x:+.4f}" if isinstance(x, int | float) else "-"


if __name__ == "__main__":
    sys.exit(main())
