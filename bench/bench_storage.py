"""Round trip of a large artifact through S3: throughput and peak memory of the client.

    python bench/bench_storage.py [--sizes 50,500] [--max-growth-mb 100]

Starts a moto S3 server on loopback (a separate process, so the objects it keeps
in memory do not count), then for each size runs a fresh child process that
uploads a file generated on disk through ``S3Store.upload_file`` and downloads it
back with ``S3Store.download_file``. Each child reports its own peak RSS, so the
sizes are measured independently. The same round trip with boto3's stock transfer
settings (``client.upload_file`` with no ``Config``) runs on the largest size as
the point of comparison.

Streaming means the client's memory must not grow with the object: the script
exits 1 if the peak RSS of the largest size exceeds that of the smallest by more
than ``--max-growth-mb``. Loopback throughput against moto says little about a
real MinIO; the memory figures are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MB = 1024 * 1024
ACCESS_KEY, SECRET_KEY = "AKIABENCHSTORAGE0001", "bench-secret-not-real"


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_random_file(path: Path, size_mb: int) -> None:
    block = os.urandom(MB)  # one random block, varied per MB so no two parts are equal
    with open(path, "wb") as f:
        for i in range(size_mb):
            f.write(i.to_bytes(8, "little") + block[8:])


# ----------------------------------------------------------------- child: one measurement


def child(args: argparse.Namespace) -> None:
    from kubeloop.config import StorageConfig
    from kubeloop.storage import open_store, sha256_file

    work = Path(args.dir)
    src, dst = work / f"src-{args.size}.bin", work / f"dst-{args.size}.bin"
    write_random_file(src, args.size)
    store = open_store(f"s3://{args.bucket}/bench", StorageConfig(endpoint_url=args.endpoint))
    key = f"{args.mode}-{args.size}.bin"
    store.exists(key)  # builds the client and connection pool before the baseline
    base = peak_rss_mb()

    start = time.perf_counter()
    if args.mode == "kubeloop":
        store.upload_file(key, src)
    else:
        store.client.upload_file(str(src), store.bucket, f"bench/{key}")
    up = time.perf_counter() - start
    peak_up = peak_rss_mb()

    start = time.perf_counter()
    if args.mode == "kubeloop":
        store.download_file(key, dst)
    else:
        store.client.download_file(store.bucket, f"bench/{key}", str(dst))
    down = time.perf_counter() - start

    peak = peak_rss_mb()
    intact = sha256_file(src) == sha256_file(dst)
    store.delete(key)  # moto keeps objects in memory; free it for the next size
    for p in (src, dst):
        p.unlink(missing_ok=True)
    print(json.dumps({"mode": args.mode, "size_mb": args.size, "upload_s": up, "download_s": down,
                      "base_rss_mb": base, "peak_up_rss_mb": peak_up, "peak_rss_mb": peak, "intact": intact}))


# ----------------------------------------------------------------- parent: server and table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: the server goes when this script does, even if it is killed.
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_moto(log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    script = Path(sys.executable).with_name("moto_server")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"moto server exited:\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start within 30 s")


def run_child(mode: str, size: int, endpoint: str, bucket: str, work: Path) -> dict:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--mode", mode, "--size", str(size), "--endpoint", endpoint,
         "--bucket", bucket, "--dir", str(work)],
        env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} round trip of {size} MB failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="50,500", help="object sizes in MB, comma-separated")
    ap.add_argument("--max-growth-mb", type=float, default=100.0,
                    help="fail if peak RSS grows more than this from the smallest to the largest size")
    ap.add_argument("--no-baseline", action="store_true", help="skip the boto3-defaults comparison run")
    ap.add_argument("--dir", help="scratch directory for the generated files (default: a temp dir)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="kubeloop", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--bucket", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0

    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(args.dir or tempfile.mkdtemp(prefix="kubeloop-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    proc, endpoint = start_moto(work / "moto.log")
    try:
        import boto3

        bucket = "kubeloop-bench"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY).create_bucket(Bucket=bucket)
        runs = [run_child("kubeloop", size, endpoint, bucket, work) for size in sizes]
        if not args.no_baseline:
            runs.append(run_child("boto3-defaults", sizes[-1], endpoint, bucket, work))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)

    from kubeloop.storage import TRANSFER_CHUNK_BYTES, TRANSFER_CONCURRENCY

    print(f"S3 round trip against moto on loopback (kubeloop: {TRANSFER_CHUNK_BYTES // MB} MB parts, "
          f"{TRANSFER_CONCURRENCY} in flight)")
    print(f"{'transfer':<16}{'size MB':>8}{'up MB/s':>10}{'down MB/s':>11}{'peak RSS MB':>13}{'over base MB':>14}  ok")
    for r in runs:
        print(f"{r['mode']:<16}{r['size_mb']:>8}{r['size_mb'] / r['upload_s']:>10.1f}"
              f"{r['size_mb'] / r['download_s']:>11.1f}{r['peak_rss_mb']:>13.1f}"
              f"{r['peak_rss_mb'] - r['base_rss_mb']:>14.1f}  {'yes' if r['intact'] else 'NO'}")

    ours = [r for r in runs if r["mode"] == "kubeloop"]
    growth = ours[-1]["peak_rss_mb"] - ours[0]["peak_rss_mb"]
    print(f"\npeak RSS growth {ours[0]['size_mb']} MB -> {ours[-1]['size_mb']} MB: {growth:+.1f} MB "
          f"(limit {args.max_growth_mb:g} MB)")
    if len(runs) > len(ours):
        stock = runs[-1]
        print(f"vs boto3 defaults at {stock['size_mb']} MB: upload x{stock['upload_s'] / ours[-1]['upload_s']:.2f}, "
              f"download x{stock['download_s'] / ours[-1]['download_s']:.2f} (>1: kubeloop faster), "
              f"peak RSS {ours[-1]['peak_rss_mb'] - stock['peak_rss_mb']:+.1f} MB")
    failed = [r for r in runs if not r["intact"]]
    if failed:
        print("FAIL: a downloaded file differs from the uploaded one", file=sys.stderr)
        return 1
    if growth > args.max_growth_mb:
        print("FAIL: client memory grows with object size", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
