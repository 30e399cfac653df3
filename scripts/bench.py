#!/usr/bin/env python3
"""The benchmark cases, driven by scripts/bench (which installs the peers, builds in release,
starts PostgreSQL and exports the variables below). Do not run this file directly.

Every tool talks to the same dev-s3 (s3s-fs with SigV4) on loopback, each in its own bucket.
Each case runs RUNS times with the tools interleaved (A B C A B C ...); the table shows each
tool's median and worst run, and portail's ratio against it: the median and the worst of the
per-round ratios. Output: a markdown table on stdout and between the markers of
BENCHMARKS.md (the text around them is kept).

Environment: BENCH_WORK (scratch dir), BENCH_QUICK (1 for the smoke run), BIN (release
binaries), RCLONE, AWSCLI, DATABASE_URL.
"""

import calendar
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

WORK = os.environ["BENCH_WORK"]
QUICK = os.environ.get("BENCH_QUICK") == "1"
BIN = os.environ["BIN"]
RCLONE = os.environ["RCLONE"]
AWSCLI = os.environ["AWSCLI"]
DATABASE_URL = os.environ["DATABASE_URL"]
RUNS = 1 if QUICK else 5
ACCESS, SECRET = "bench-access-key", "bench-secret-key-0123456789"

SIZES = {
    # case: (full, quick)
    "small_files": (5000, 500),
    "big_file_mib": (1024, 64),
    "many_files": (100_000, 5000),
    "huge_tree": (1_000_000, 20_000),
    "watch_count": (1000, 100),
    "watch_load": (20_000, 2000),
}


def size(name):
    full, quick = SIZES[name]
    return quick if QUICK else full


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_PORT = free_port()
ENDPOINT = f"http://127.0.0.1:{S3_PORT}"

BASE_ENV = {
    "PATH": os.environ["PATH"],
    "HOME": os.environ.get("HOME", "/tmp"),
    "AWS_ACCESS_KEY_ID": ACCESS,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": ENDPOINT,
    "DATABASE_URL": DATABASE_URL,
    "LOG_LEVEL": "warn",
    # rclone: a remote named "bench" configured entirely from the environment.
    "RCLONE_CONFIG_BENCH_TYPE": "s3",
    "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
    "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS,
    "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET,
    "RCLONE_CONFIG_BENCH_ENDPOINT": ENDPOINT,
    "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
    "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
}


def run(cmd, env=None, check=True, timeout=3600):
    """Runs a command; returns (seconds, peak RSS in KiB, stdout)."""
    full = ["/usr/bin/time", "-f", "%M", "-o", f"{WORK}/rss"] + cmd
    t0 = time.perf_counter()
    p = subprocess.run(full, env={**BASE_ENV, **(env or {})}, capture_output=True, text=True,
                       timeout=timeout)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    with open(f"{WORK}/rss") as f:
        rss = int(f.read().strip().splitlines()[-1])
    return dt, rss, p.stdout


_bucket_seq = 0


# A second dev-s3 whose objects live in tmpfs (see `memory_server`).
MEMORY = f"/dev/shm/portail-bench-{os.getpid()}"
MEMORY_ENDPOINT = f"http://127.0.0.1:{free_port()}"


def new_bucket(tag):
    """A new bucket (s3s-fs: a directory) on the server in use."""
    global _bucket_seq
    _bucket_seq += 1
    name = f"{tag}-{_bucket_seq}"
    os.makedirs(f"{s3_root()}/{name}")
    return name


def s3_root():
    return MEMORY if ENDPOINT == MEMORY_ENDPOINT else f"{WORK}/s3"


def start_servers():
    """The two dev-s3 servers: objects on disk, and objects in tmpfs."""
    os.makedirs(f"{WORK}/s3", exist_ok=True)
    os.makedirs(MEMORY, exist_ok=True)
    return [subprocess.Popen([f"{BIN}/dev-s3", "--addr", url.removeprefix("http://"), root],
                             env=BASE_ENV, stderr=subprocess.DEVNULL)
            for url, root in [(ENDPOINT, f"{WORK}/s3"), (MEMORY_ENDPOINT, MEMORY)]]


@contextlib.contextmanager
def memory_server():
    """Points every tool at the dev-s3 that keeps its objects in tmpfs, for the block. This
    disk slows down for minutes after mass deletes, which made the rounds of case 1 vary from
    1.3 to 4.3 s for the same tool; the cases of many small objects run here, every tool
    alike. (s3s-fs writes each object to a temporary file in its root and renames it into the
    bucket, so the whole root must be in tmpfs.)"""
    global ENDPOINT
    saved = ENDPOINT
    ENDPOINT = MEMORY_ENDPOINT
    BASE_ENV["AWS_ENDPOINT_URL"] = BASE_ENV["RCLONE_CONFIG_BENCH_ENDPOINT"] = MEMORY_ENDPOINT
    try:
        yield
    finally:
        ENDPOINT = saved
        BASE_ENV["AWS_ENDPOINT_URL"] = BASE_ENV["RCLONE_CONFIG_BENCH_ENDPOINT"] = saved


def portail(bucket, src, agent, extra=None):
    env = {"AWS_BUCKET_NAME": bucket, "SYNC_ROOT": src, "AGENT_ID": agent, **(extra or {})}
    return run([f"{BIN}/portail-agent", "sync"], env=env)


def rclone(bucket, src, flags):
    return run([RCLONE, "sync", src, f"bench:{bucket}"] + flags)


def aws(bucket, src):
    return run([AWSCLI, "s3", "sync", src, f"s3://{bucket}", "--endpoint-url", ENDPOINT,
                "--only-show-errors"])


def rclone_tuned(n):
    """rclone at a tuned setting (issue 14): n transfers and checkers, no bucket check, and
    no listing of the (empty) destination on the first upload. The resync lists (with
    --no-traverse it would HEAD every file)."""
    return ["--transfers", str(n), "--checkers", str(n), "--s3-no-check-bucket"]


def ceiling(bucket, src):
    """The ceiling: bare SDK PUTs of the same files from memory, as many in flight as portail
    (its default UPLOAD_CONCURRENCY, 16). Only the PUTs are timed."""
    _, _, out = run([f"{BIN}/bench-ceiling", "--root", src, "--concurrency", "16"],
                    env={"AWS_BUCKET_NAME": bucket})
    return json.loads(out)["seconds"]


CEILING = "ceiling: bare SDK PUTs from memory, 16 in flight"
RCLONE_OLD = "rclone --transfers 16 --checkers 16"


def drop_bucket(name):
    """Removes a bucket and its objects."""
    shutil.rmtree(f"{s3_root()}/{name}")


def upload_peers():
    """Case 1 and 2: name -> fn(bucket, src) -> (first upload s, no-change resync s or None).
    Every rclone setting is timed; the fastest median is the peer the targets use."""
    def portail_both(b, src):
        agent = f"c1-{b}"
        return portail(b, src, agent)[0], portail(b, src, agent)[0]

    def rclone_both(flags, first_extra):
        return lambda b, src: (rclone(b, src, flags + first_extra)[0], rclone(b, src, flags)[0])

    peers = {"portail": portail_both,
             CEILING: lambda b, src: (ceiling(b, src), None),
             "rclone (defaults)": rclone_both([], []),
             RCLONE_OLD: rclone_both(["--transfers", "16", "--checkers", "16"], [])}
    for n in (16, 32, 64):
        name = f"rclone --transfers {n} --checkers {n} --s3-no-check-bucket (+ --no-traverse on the first upload)"
        peers[name] = rclone_both(rclone_tuned(n), ["--no-traverse"])
    # rclone HEADs every object it uploaded, to check it; --s3-no-head skips that check.
    name = "rclone --transfers 16 --checkers 16 --s3-no-check-bucket --s3-no-head (+ --no-traverse)"
    peers[name] = rclone_both(rclone_tuned(16) + ["--s3-no-head"], ["--no-traverse"])
    peers["aws s3 sync"] = lambda b, src: (aws(b, src)[0], aws(b, src)[0])
    return peers


def gen_tree(root, files, dirs, size_bytes):
    """Random-content files, `dirs` folders, written cheaply (one open/write/close each)."""
    if os.path.isdir(root):
        return
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blob = os.urandom(size_bytes + files)
    for d in range(dirs):
        os.makedirs(f"{tmp}/d{d:04}")
    for i in range(files):
        fd = os.open(f"{tmp}/d{i % dirs:04}/f{i:07}.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, blob[i % files: i % files + size_bytes])
        os.close(fd)
    os.rename(tmp, root)


def med(xs):
    return statistics.median(xs)


RESULTS = []  # (case, tool, figure text, raw value, unit)
RATIOS = {}  # (case, tool) -> (median, worst) of the per-round ratios, portail against the tool


def record(case, tool, value, unit, fmt):
    RESULTS.append((case, tool, value, unit, fmt.format(value)))
    log(f"  {case} | {tool}: {fmt.format(value)}")


def case_small_files():
    n = size("small_files")
    src = f"{WORK}/small"
    gen_tree(src, n, 50, 4096)
    peers = upload_peers()
    first, again = [], []
    for r in range(RUNS):
        f_round, a_round = {}, {}
        for name, fn in peers.items():
            b = new_bucket("c1")
            f_round[name], t_again = fn(b, src)
            drop_bucket(b)
            if t_again is not None:
                a_round[name] = t_again
        first.append(f_round)
        again.append(a_round)
    record_rounds(f"1. first upload, {n} x 4 KiB in 50 folders", first,
                  lambda t: (n / t, "files/s", "{:.0f} files/s"))
    record_rounds("2. no-change resync of case 1", again, lambda t: (t, "s", "{:.3f} s"))


def gen_big(src, mib):
    if not os.path.isdir(src):
        os.makedirs(src + ".tmp", exist_ok=True)
        with open(f"{src}.tmp/big.bin", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        os.rename(src + ".tmp", src)


def case_big_file():
    mib = size("big_file_mib")
    src = f"{WORK}/big"
    gen_big(src, mib)
    peers = {
        "portail": lambda b: portail(b, src, f"c3-{b}")[0],
        "rclone (defaults)": lambda b: rclone(b, src, [])[0],
        "rclone --s3-upload-concurrency 8 --s3-no-check-bucket": lambda b: rclone(
            b, src, ["--s3-upload-concurrency", "8", "--s3-no-check-bucket"])[0],
        "aws s3 sync": lambda b: aws(b, src)[0],
    }
    rounds = []
    for r in range(RUNS):
        times = {}
        for name, fn in peers.items():
            b = new_bucket("c3")
            times[name] = fn(b)
            shutil.rmtree(f"{WORK}/s3/{b}")  # keep the disk from filling up
        rounds.append(times)
    record_rounds(f"3. one {mib} MiB file", rounds, lambda t: (mib / t, "MiB/s", "{:.0f} MiB/s"))


def case_many_files():
    n = size("many_files")
    src = f"{WORK}/many"
    gen_tree(src, n, 200, 100)
    peers = {"portail": lambda b: portail(b, src, "c4")}
    for k in (16, 64):
        peers[f"rclone --checkers {k} --transfers {k} --s3-no-check-bucket"] = (
            lambda b, k=k: rclone(b, src, rclone_tuned(k)))
    buckets = {name: new_bucket("c4") for name in peers}
    log(f"  case 4: initial uploads of {n} files (not timed)")
    for name, fn in peers.items():
        fn(buckets[name])
    rounds = [{name: fn(buckets[name])[0] for name, fn in peers.items()} for _ in range(RUNS)]
    record_rounds(f"4. no-change resync of {n} files", rounds, lambda t: (t, "s", "{:.2f} s"))


def case_memory():
    n = size("huge_tree")
    src = f"{WORK}/huge"
    log(f"  case 5: generating {n} files")
    gen_tree(src, n, 1000, 16)
    b = new_bucket("c5")
    t1, rss1, _ = portail(b, src, "c5")
    record(f"5. peak RSS, first pass over {n} files (upload)", "portail", rss1 / 1024, "MB",
           "{:.0f} MB" + f" ({t1:.0f} s, {n / t1:.0f} files/s)")
    t2, rss2, _ = portail(b, src, "c5")
    record(f"5. peak RSS, no-change pass over {n} files (scan + catalog)", "portail",
           rss2 / 1024, "MB", "{:.0f} MB" + f" ({t2:.1f} s)")
    shutil.rmtree(f"{WORK}/s3/{b}")


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered 200")


@contextlib.contextmanager
def watch_agent(tag):
    """A `portail-agent watch` on a fresh root and bucket, ready; yields (env, metrics address,
    process) and stops it with SIGTERM."""
    root = f"{WORK}/watch-{tag}"
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    addr = f"127.0.0.1:{free_port()}"
    env = {**BASE_ENV, "AWS_BUCKET_NAME": new_bucket(tag), "SYNC_ROOT": root, "AGENT_ID": tag,
           "METRICS_ADDR": addr}
    agent = subprocess.Popen([f"{BIN}/portail-agent", "watch"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://{addr}/readyz")
        yield env, addr, agent
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)


def bench_watch(env, rate, count, dirs=1, head=True):
    """Runs bench-watch (which fails when a file is not synced in time); returns its JSON.
    Without `head`, a file counts as synced on its catalog row alone (see bench-watch)."""
    out = subprocess.run(
        [f"{BIN}/bench-watch", "--root", env["SYNC_ROOT"], "--rate", str(rate), "--count",
         str(count), "--dirs", str(dirs), "--timeout", "120"] + ([] if head else ["--no-head"]),
        env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"bench-watch failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def case_watch():
    count = size("watch_count")
    with watch_agent("c6") as (env, _, _):
        for rate in (10, 100):
            n = min(count, rate * 10) if QUICK else count
            res = bench_watch(env, rate, n)
            record(f"6. watch latency at {rate} changes/s ({res['count']} files), p50", "portail",
                   res["p50_ms"], "ms", "{:.0f} ms")
            record(f"6. watch latency at {rate} changes/s ({res['count']} files), p99", "portail",
                   res["p99_ms"], "ms", "{:.0f} ms")


def sample_gauge(addr, name, stop, peak):
    """Reads a gauge from the agent's /metrics every 100 ms until `stop`; keeps its peak."""
    pattern = re.compile(rf"^{name} ([0-9.eE+-]+)$", re.M)
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=1) as r:
                m = pattern.search(r.read().decode())
            if m:
                peak[0] = max(peak[0], float(m.group(1)))
        except OSError:
            pass
        stop.wait(0.1)


def case_watch_load():
    """Issue 14: watch mode under a sustained load: files written at 1000 files/s into 200
    folders. Close-to-synced latency (p50, p99, max) and the peak of the agent's lag gauge.
    Goal: p99 <= 1 s with nothing lost (bench-watch fails if any file is not synced)."""
    count, rate = size("watch_load"), 1000
    with watch_agent("c8") as (env, addr, agent):
        stop, peak = threading.Event(), [0.0]
        sampler = threading.Thread(target=sample_gauge,
                                   args=(addr, "portail_agent_sync_lag_seconds", stop, peak))
        sampler.start()
        try:
            res = bench_watch(env, rate, count, dirs=200, head=False)
        finally:
            stop.set()
            sampler.join()
        rss = peak_rss_kib(agent.pid) / 1024
    case = f"8. watch under load: {res['count']} files at {rate}/s into 200 folders"
    record(case + ", p50", "portail", res["p50_ms"], "ms", "{:.0f} ms")
    record(case + ", p99", "portail", res["p99_ms"], "ms", "{:.0f} ms")
    record(case + ", max", "portail", res["max_ms"], "ms", "{:.0f} ms")
    record(case + ", lag gauge peak", "portail", peak[0], "s", "{:.2f} s")
    record(case + ", agent peak RSS", "portail", rss, "MB", "{:.0f} MB")


WRK_POST = """
wrk.method = "POST"
wrk.body = '{"expires_in_seconds": 300}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def wrk(url, script=None, seconds=10, connections=32):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{3 if QUICK else seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    p = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=120)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", p.stdout).group(1))
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", p.stdout)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
    if non2xx:
        raise SystemExit(f"wrk saw errors:\n{p.stdout}")
    total = int(re.search(r"(\d+) requests in", p.stdout).group(1))
    # wrk leaves a request that took over 2 s out of its latencies: with only such requests its
    # p99 reads 0. Report them as an infinite p99, never as a fast one.
    timeouts = re.search(r"timeout (\d+)", p.stdout)
    if timeouts and int(timeouts.group(1)) > 0:
        print(f"  wrk: {timeouts.group(1)} requests over 2 s on {url}", file=sys.stderr)
        p99 = float("inf")
    return rps, p99, total


def case_url_service():
    # A catalog row to presign: the case-1 tree synced by a dedicated agent.
    b = new_bucket("c7")
    src = f"{WORK}/c7src"
    os.makedirs(src, exist_ok=True)
    with open(f"{src}/hello.txt", "w") as f:
        f.write("hello\n")
    portail(b, src, "c7")
    addr = f"127.0.0.1:{free_port()}"
    env = {"AWS_BUCKET_NAME": b, "LISTEN_ADDR": addr}
    _, _, token = run([f"{BIN}/portail-url-service", "token", "create", "--name",
                       f"bench-{time.time_ns()}"], env=env)
    token = token.strip()
    svc = subprocess.Popen([f"{BIN}/portail-url-service", "serve"], env={**BASE_ENV, **env},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://{addr}/healthz")
        auth = {"Authorization": f"Bearer {token}"}
        with urllib.request.urlopen(urllib.request.Request(
                f"http://{addr}/v1/files?agent=c7", headers=auth)) as r:
            file_id = json.load(r)["files"][0]["id"]
        req = urllib.request.Request(f"http://{addr}/v1/links", method="POST",
                                     data=json.dumps({"file_id": file_id}).encode(),
                                     headers={**auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            link = json.load(r)["url"]
        link_path = link[link.index("/l/"):]
        script = f"{WORK}/post.lua"
        with open(script, "w") as f:
            f.write(WRK_POST % token)
        rps, p99, posts = wrk(f"http://{addr}/v1/files/{file_id}/url", script)
        record("7. url-service POST /v1/files/{id}/url (wrk -t2 -c32)", "portail", rps, "req/s",
               "{:.0f} req/s, p99 " + f"{p99:.1f} ms")
        rps, p99, clicks = wrk(f"http://{addr}{link_path}")
        record("7. url-service GET /l/{token} (wrk -t2 -c32)", "portail", rps, "req/s",
               "{:.0f} req/s, p99 " + f"{p99:.1f} ms")
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(timeout=30)
    # Every answer wrk counted is in the audit log once the service has stopped (issue 15).
    # wrk does not count the requests cut off at its deadline, which the service may have
    # answered (and recorded): at most one per connection.
    written = int(subprocess.run(
        ["psql", DATABASE_URL, "-tAc", f"select count(*) from audit_log where file_id = {file_id}"],
        capture_output=True, text=True, check=True).stdout)
    if not posts + clicks <= written <= posts + clicks + 2 * 32:
        raise SystemExit(f"audit log: {written} entries for {posts + clicks} requests")
    record("7b. audit entries per request answered (after shutdown)", "portail",
           written / (posts + clicks), "ratio", "{:.4f}" + f" ({written} for {posts + clicks})")


WRK_GET_AUTH = """
wrk.headers["Authorization"] = "Bearer %s"
"""


def synced_rows_sql(agent, top, mid, rows):
    """SQL for an agent and `rows` synced catalog rows `<top>N/<mid>M/<md5>.txt` (100 top
    folders, 37 below each); run twice, it adds nothing."""
    return f"""
insert into agents (name, hostname, root, bucket) values ('{agent}', 'h', '/r', 'b')
  on conflict (name) do nothing;
insert into files (agent_id, path, s3_key, size_bytes, mtime, status, md5)
  select a.id, p, p, i, now(), 'synced', md5(i::text)
  from agents a, generate_series(1, {rows}) i,
       lateral (select '{top}' || (i % 100) || '/{mid}' || (i % 37) || '/' ||
                       md5(i::text) || '.txt' as p) x
  where a.name = '{agent}'
  on conflict do nothing;
"""


def case_search():
    """Issue 15: `GET /v1/files?q=` for a 4-letter substring on a catalog of 1 000 000 rows
    answers with p99 <= 50 ms (wrk -t2 -c8)."""
    rows = 1_000_000 if not QUICK else 50_000
    # Another agent's rows come first, with lower ids, as on a catalog that serves several
    # file servers: a search in one agent must not walk the other's rows (it did, at 2 req/s).
    sql = (synced_rows_sql("earlier", "home", "user", rows)
           + synced_rows_sql("search", "share", "dept", rows) + "analyze files;\n")
    addr = f"127.0.0.1:{free_port()}"
    env = {"AWS_BUCKET_NAME": "b", "LISTEN_ADDR": addr}
    _, _, token = run([f"{BIN}/portail-url-service", "token", "create", "--name",
                       f"search-{time.time_ns()}"], env=env)
    # `token create` has run the migrations.
    p = subprocess.run(["psql", DATABASE_URL, "-q", "-X", "-v", "ON_ERROR_STOP=1"], input=sql,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"search rows failed:\n{p.stderr}")
    svc = subprocess.Popen([f"{BIN}/portail-url-service", "serve"], env={**BASE_ENV, **env},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://{addr}/healthz")
        script = f"{WORK}/get.lua"
        with open(script, "w") as f:
            f.write(WRK_GET_AUTH % token.strip())
        for q, what in [("a1b2", "rare: ~400 matches"), ("dept", "in every path")]:
            url = f"http://{addr}/v1/files?agent=search&q={q}&limit=100"
            with urllib.request.urlopen(urllib.request.Request(
                    url, headers={"Authorization": f"Bearer {token.strip()}"})) as r:
                got = len(json.load(r)["files"])
            rps, p99, _ = wrk(url, script, connections=8)
            record(f"11. GET /v1/files?agent=&q= in one agent's {rows} rows, after another's {rows}; {what} (wrk -t2 -c8)", "portail", p99,
                   "ms p99", "p99 {:.1f} ms" + f", {rps:.0f} req/s, {got} on the first page")
        folder_pages(addr, token.strip(), 2 * rows)
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(timeout=30)


def ui_session(addr, token):
    """Signs in to the web pages as a browser does; returns the Cookie header's value."""
    with urllib.request.urlopen(f"http://{addr}/ui/login") as r:
        login_cookie = r.headers["Set-Cookie"].split(";", 1)[0]
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.read().decode()).group(1)
    form = urllib.parse.urlencode({"token": token, "csrf": csrf}).encode()
    req = urllib.request.Request(f"http://{addr}/ui/login", data=form,
                                 headers={"Cookie": login_cookie})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    try:
        urllib.request.build_opener(NoRedirect).open(req)
    except urllib.error.HTTPError as e:
        for c in e.headers.get_all("Set-Cookie"):
            if c.startswith("portail_session="):
                return c.split(";", 1)[0]
    raise SystemExit("could not sign in to the web pages")


def folder_pages(addr, token, rows):
    """Issue 15: a folder page of 1000 entries on a catalog of `rows` + 110 000 rows: one folder
    of 100 000 files by name (p99 <= 50 ms), one of 10 000 by size, and the root's 102
    subfolders."""
    big = 100_000 if not QUICK else 5000
    sql = f"""
insert into files (agent_id, path, s3_key, size_bytes, mtime, status, md5)
  select a.id, 'big/' || lpad(i::text, 7, '0') || '.dat', 'big/' || i, i % 9973,
         now() - i * interval '1 second', 'synced', md5(i::text)
  from agents a, generate_series(1, {big}) i where a.name = 'search'
  on conflict do nothing;
insert into files (agent_id, path, s3_key, size_bytes, mtime, status, md5)
  select a.id, 'mid/' || i || '.dat', 'mid/' || i, (i * 7919) % 100003,
         now() - i * interval '1 second', 'synced', md5(i::text)
  from agents a, generate_series(1, 10000) i where a.name = 'search'
  on conflict do nothing;
analyze files;
"""
    subprocess.run(["psql", DATABASE_URL, "-q", "-X", "-v", "ON_ERROR_STOP=1"], input=sql,
                   capture_output=True, text=True, check=True)
    cookie = ui_session(addr, token)
    script = f"{WORK}/cookie.lua"
    with open(script, "w") as f:
        f.write(f'wrk.headers["Cookie"] = "{cookie}"\n')
    for query, what in [("dir=big/", f"a folder of {big} files, by name, 1000 a page"),
                        ("dir=mid/&sort=size", "a folder of 10000 files by size, 1000 a page"),
                        ("dir=", "the root: 102 subfolders")]:
        url = f"http://{addr}/ui/?agent=search&{query}"
        rps, p99, _ = wrk(url, script, connections=8)
        record(f"12. web page: {what}; {rows + big + 10000} rows (wrk -t2 -c8)", "portail",
               p99, "ms p99", "p99 {:.1f} ms" + f", {rps:.0f} req/s")


def curl_get(url, headers=()):
    """Downloads to /dev/null with curl; returns seconds and bytes received."""
    cmd = ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}"]
    for h in headers:
        cmd += ["-H", h]
    t0 = time.perf_counter()
    p = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"curl {url} failed: {p.stderr}")
    return dt, int(p.stdout)


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))


def case_proxy_download():
    """Issue 18: DOWNLOAD_MODE=proxy streams a big object at least 0.8x as fast as a direct
    GET of a presigned URL from the same server, with the url-service's RSS under 64 MB."""
    mib = size("big_file_mib")
    src = f"{WORK}/proxysrc"
    if not os.path.isdir(src):
        os.makedirs(src)
        with open(f"{src}/big.bin", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    b = new_bucket("c9")
    portail(b, src, "c9")
    addr = f"127.0.0.1:{free_port()}"
    env = {"AWS_BUCKET_NAME": b, "LISTEN_ADDR": addr, "DOWNLOAD_MODE": "proxy"}
    _, _, token = run([f"{BIN}/portail-url-service", "token", "create", "--name",
                       f"bench-{time.time_ns()}"], env=env)
    auth = f"Authorization: Bearer {token.strip()}"
    svc = subprocess.Popen([f"{BIN}/portail-url-service", "serve"], env={**BASE_ENV, **env},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://{addr}/healthz")
        hdr = {"Authorization": auth.split(": ", 1)[1]}
        with urllib.request.urlopen(urllib.request.Request(
                f"http://{addr}/v1/files?agent=c9", headers=hdr)) as r:
            file_id = json.load(r)["files"][0]["id"]
        direct, proxied = [], []
        for _ in range(max(RUNS, 5)):
            req = urllib.request.Request(f"http://{addr}/v1/files/{file_id}/url", method="POST",
                                         data=b"{}", headers={**hdr, "Content-Type": "application/json"})
            with urllib.request.urlopen(req) as r:
                url = json.load(r)["url"]
            dt, n = curl_get(url)
            direct.append(n / dt / (1 << 20))
            dt, n = curl_get(f"http://{addr}/v1/files/{file_id}/content", [auth])
            assert n == mib << 20, f"proxied {n} bytes"
            proxied.append(n / dt / (1 << 20))
        rss_mb = peak_rss_kib(svc.pid) / 1024
        case = f"9. download {mib} MiB: proxy mode vs a direct presigned GET (median of {len(direct)}, interleaved)"
        record(case, "portail", med(proxied), "MiB/s",
               "{:.0f} MiB/s (worst " + f"{min(proxied):.0f})")
        record(case, "direct GET from dev-s3 (curl)", med(direct), "MiB/s",
               "{:.0f} MiB/s (worst " + f"{min(direct):.0f})")
        record("9b. url-service peak RSS over those downloads", "portail", rss_mb, "MB", "{:.0f} MB")
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(timeout=30)
        shutil.rmtree(f"{WORK}/s3/{b}", ignore_errors=True)


RESTORE_ROUNDS = 1 if QUICK else 5


def restore_round(peers, tag):
    """One interleaved round: each peer restores into a fresh directory, which is then
    removed. Returns {peer: (seconds, peak RSS KiB)}."""
    out = {}
    for name, fn in peers.items():
        dst = f"{WORK}/restore-{tag}"
        shutil.rmtree(dst, ignore_errors=True)
        t, rss, _ = fn(dst)
        out[name] = (t, rss)
        shutil.rmtree(dst, ignore_errors=True)
    return out


def restore_peers(bucket, agent, src, rclone_best):
    env = {"AWS_BUCKET_NAME": bucket, "SYNC_ROOT": src, "AGENT_ID": agent}
    return {
        "portail": lambda dst: run([f"{BIN}/portail-agent", "restore", "--to", dst], env=env),
        "rclone copy --transfers 16": lambda dst: run(
            [RCLONE, "copy", f"bench:{bucket}", dst, "--transfers", "16"]),
        f"rclone copy {' '.join(rclone_best)}": lambda dst: run(
            [RCLONE, "copy", f"bench:{bucket}", dst] + rclone_best),
    }


def record_rounds(case, rounds, unit_of):
    """Median and worst over the rounds, per tool, and portail's ratio against each: the
    median and the worst of the per-round ratios (a round's tools ran back to back). A round
    maps tool -> seconds, or -> (seconds, anything). The fastest rclone setting is marked."""
    secs = lambda x: x[0] if isinstance(x, tuple) else x
    tools = list(rounds[0])
    rclones = [t for t in tools if t.startswith("rclone")]
    best = min(rclones, key=lambda t: med([secs(r[t]) for r in rounds])) if len(rclones) > 1 else None
    for name in tools:
        times = [secs(r[name]) for r in rounds]
        med_t, worst = med(times), max(times)
        value, unit, fmt = unit_of(med_t)
        tool = name + (" **(best rclone)**" if name == best else "")
        record(case, tool, value, unit, fmt + f" (median {med_t:.2f} s, worst {worst:.2f} s)")
        if name != "portail" and "portail" in rounds[0]:
            ratios = [secs(r[name]) / secs(r["portail"]) for r in rounds]
            RATIOS[(case, tool)] = (med(ratios), min(ratios))


def check_rclone_lsl(bucket, src):
    """Issue 13: rclone reads our `mtime` metadata, so `rclone lsl` of the bucket shows each
    file's local mtime (to the microsecond, the catalog's precision). Stops the run if not."""
    p = subprocess.run([RCLONE, "lsl", f"bench:{bucket}"], env={**BASE_ENV, "TZ": "UTC"},
                       capture_output=True, text=True, check=True)
    n, wrong = 0, []
    for line in p.stdout.splitlines():
        _, day, clock, path = line.split(None, 3)
        shown = datetime.datetime.strptime(f"{day} {clock[:15]}", "%Y-%m-%d %H:%M:%S.%f")
        shown_us = calendar.timegm(shown.timetuple()) * 10**6 + shown.microsecond
        n += 1
        if shown_us != os.stat(f"{src}/{path}").st_mtime_ns // 1000:
            wrong.append(line)
    if n == 0 or wrong:
        raise SystemExit(f"rclone lsl shows other mtimes than the files' ({n} listed): {wrong[:5]}")
    log(f"  rclone lsl: the {n} mtimes it shows are the files' own")


def case_restore():
    """Issue 13: `portail-agent restore` of small files against `rclone copy` from the same
    bucket."""
    n = size("small_files")
    src = f"{WORK}/small"
    gen_tree(src, n, 50, 4096)
    b = new_bucket("c10")
    portail(b, src, "c10")
    check_rclone_lsl(b, src)
    peers = restore_peers(b, "c10", src, ["--transfers", "32", "--checkers", "32", "--no-traverse"])
    rounds = [restore_round(peers, "small") for _ in range(RESTORE_ROUNDS)]
    record_rounds(f"10. restore {n} x 4 KiB files", rounds,
                  lambda t: (n / t, "files/s", "{:.0f} files/s"))
    rss = max(r["portail"][1] for r in rounds) / 1024
    record(f"10c. restore peak RSS, {n} files", "portail", rss, "MB", "{:.0f} MB")


def case_restore_big():
    """Issue 13: one big file restored, portail (ranged GETs) against rclone's multi-thread
    download."""
    mib = size("big_file_mib")
    big = f"{WORK}/big"
    gen_big(big, mib)
    b2 = new_bucket("c10b")
    portail(b2, big, "c10b")
    peers = restore_peers(b2, "c10b", big, ["--transfers", "16", "--multi-thread-streams", "8"])
    rounds = [restore_round(peers, "big") for _ in range(RESTORE_ROUNDS)]
    record_rounds(f"10b. restore one {mib} MiB file", rounds,
                  lambda t: (mib / t, "MiB/s", "{:.0f} MiB/s"))
    rss = max(r["portail"][1] for r in rounds) / 1024
    record(f"10b. restore peak RSS, one {mib} MiB file", "portail", rss, "MB", "{:.0f} MB")
    shutil.rmtree(f"{WORK}/s3/{b2}", ignore_errors=True)


def case_restore_scale():
    """Issue 13: restore's memory at many files, and the plan of `--at` on deep history."""
    many = f"{WORK}/many"
    m = size("many_files")
    gen_tree(many, m, 200, 100)
    b3 = new_bucket("c10m")
    portail(b3, many, "c10m")
    dst = f"{WORK}/restore-many"
    t, rss3, _ = run([f"{BIN}/portail-agent", "restore", "--to", dst],
                     env={"AWS_BUCKET_NAME": b3, "SYNC_ROOT": many, "AGENT_ID": "c10m"})
    shutil.rmtree(dst, ignore_errors=True)
    record(f"10c. restore peak RSS, {m} files", "portail", rss3 / 1024, "MB",
           "{:.0f} MB" + f" ({t:.1f} s, {m / t:.0f} files/s)")
    explain_restore_at()


EXPLAIN = []  # the plan of `restore --at` on a catalog of 1 000 000 versions


def explain_restore_at():
    """Fills a catalog with 10 000 paths x 100 versions, then EXPLAINs the page query of
    `restore --at` half-way through their history (the query text of
    core/src/catalog/versions.rs::versions_at)."""
    paths, per = (10_000, 100) if not QUICK else (1000, 10)
    sql = f"""
insert into agents (name, hostname, root, bucket) values ('explain', 'h', '/r', 'b')
  on conflict (name) do nothing;
insert into files (agent_id, path, s3_key, size_bytes, mtime, status)
  select a.id, 'd/' || i, 'd/' || i, 1, now(), 'synced'
  from agents a, generate_series(1, {paths}) i where a.name = 'explain'
  on conflict do nothing;
insert into file_versions (file_id, agent_id, path, valid_from, valid_to, size_bytes, md5,
                           mtime, s3_key, event)
  select f.id, f.agent_id, f.path, now() - (v + 1) * interval '1 hour',
         case when v = 0 then null else now() - v * interval '1 hour' end,
         1, repeat('0', 32), now(), f.s3_key, 'uploaded'
  from files f join agents a on a.id = f.agent_id, generate_series(0, {per - 1}) v
  where a.name = 'explain';
analyze file_versions;
select id as aid from agents where name = 'explain' \\gset
explain (analyze, costs off, timing off, summary on)
select * from (
    select * from file_versions
    where agent_id = :aid and valid_to is null
      and valid_from <= now() - interval '{per // 2} hours'
    union all
    select * from file_versions
    where agent_id = :aid
      and valid_to > now() - interval '{per // 2} hours'
      and valid_from <= now() - interval '{per // 2} hours'
) v
where cardinality('{{}}'::text[]) = 0
order by path collate "C" limit 1000;
"""
    p = subprocess.run(["psql", DATABASE_URL, "-q", "-X", "-v", "ON_ERROR_STOP=1"], input=sql,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"explain failed:\n{p.stderr}")
    EXPLAIN.append((paths * per, p.stdout.rstrip()))
    log(p.stdout)


def machine():
    cores = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cores} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB RAM, {platform.platform()}"


def versions():
    rc = subprocess.run([RCLONE, "version"], capture_output=True, text=True).stdout.split("\n")[0]
    aw = subprocess.run([AWSCLI, "--version"], capture_output=True, text=True)
    aw = (aw.stdout or aw.stderr).split()[0]
    return f"{rc}, {aw}"


def table():
    """Absolute figures per case and tool, and portail's ratio against each peer."""
    higher_better = {"files/s", "MiB/s", "req/s"}
    lines = ["| case | tool | figure | portail vs this tool |", "|---|---|---|---|"]
    by_case = {}
    for case, tool, value, unit, text in RESULTS:
        by_case.setdefault(case, []).append((tool, value, unit, text))
    for case, rows in by_case.items():
        ours = next((v for t, v, _, _ in rows if t == "portail"), None)
        for tool, value, unit, text in rows:
            ratio = ""
            if (case, tool) in RATIOS:
                r, worst = RATIOS[(case, tool)]
                ratio = f"**{r:.2f}x** (worst round {worst:.2f}x)"
            elif tool != "portail" and ours:
                r = ours / value if unit in higher_better else value / ours
                ratio = f"**{r:.2f}x** {'faster' if r >= 1 else 'slower'}"
            lines.append(f"| {case} | {tool} | {text} | {ratio} |")
    return "\n".join(lines)


def main():
    servers = start_servers()
    try:
        time.sleep(0.5)
        cases = [case_small_files, case_big_file, case_many_files, case_memory, case_watch,
                 case_watch_load, case_url_service, case_proxy_download, case_restore, case_restore_big,
                 case_restore_scale, case_search]
        only = os.environ.get("BENCH_ONLY", "").split(",")
        for c in cases:
            if only != [""] and not any(o and o in c.__name__ for o in only):
                continue
            log(f"== {c.__name__}")
            in_memory = c in (case_small_files, case_watch, case_watch_load)
            with memory_server() if in_memory else contextlib.nullcontext():
                c()
    finally:
        for s3 in servers:
            s3.terminate()
            s3.wait()
        shutil.rmtree(MEMORY, ignore_errors=True)
    date = time.strftime("%Y-%m-%d")
    body = f"""`scripts/bench{' --quick' if QUICK else ''}` on {date}: {machine()}.
Peers: {versions()}. Every tool uploads to the same local S3 server (`dev-s3`: s3s-fs with
SigV4 checked), each into its own bucket; PostgreSQL is a local throwaway cluster (fsync off).
Release build. {RUNS} rounds per case, the tools interleaved in each; each tool's median and
worst run are shown. A ratio above 1 means portail is faster (or uses less); where the tools
ran in rounds it is the median of the per-round ratios, with the worst round beside it.

{table()}
"""
    for count, plan in EXPLAIN:
        body += f"""
### `restore --at` on {count} versions: the page query's plan

```
{plan}
```
"""
    print(body)
    # A partial run (BENCH_ONLY) prints its table but never replaces the full one.
    if os.environ.get("BENCH_OUT") and not os.environ.get("BENCH_ONLY"):
        write_between_markers(os.environ["BENCH_OUT"], body)


BEGIN, END = "<!-- scripts/bench: begin -->", "<!-- scripts/bench: end -->"


def write_between_markers(path, body):
    """Replaces the text between the markers of `path` (written by hand around them: the
    analysis, the profiles), or starts the file with them."""
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
    else:
        head, tail = "# Benchmarks\n\n", "\n" + old
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{body}\n{END}{tail}")


if __name__ == "__main__":
    main()
