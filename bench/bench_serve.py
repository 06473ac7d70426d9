#!/usr/bin/env python3
"""bench/bench_serve.py -- the load client of bench/bench_serve.sh.

Starts llm-serve on MODEL (--port 0), waits for GET /health, then

  single  one streaming client, sequential requests for --single-seconds:
          the reference tokens/s (its requests' completion tokens over the
          time they took, one after the other);
  load    --clients streaming clients for --seconds, each looping requests
          like the above; every stream is checked (status 200,
          text/event-stream, each data line a JSON chunk, a finish_reason,
          the usage chunk with max_tokens completion tokens, and the last
          line data: [DONE]); GET /metrics is sampled every second for the
          peak of the KV blocks used against their budget (and of the
          sequences running).  Aggregate tokens/s counts the tokens that
          arrived in the window (content chunks, scaled by completion tokens
          per chunk of the finished streams); the streams still running at
          its end run to completion and are checked too;

then stops the server with SIGTERM and checks that it exits 0.  Exit status 1
on any error, a KV peak over the budget, KV metrics missing, or a server
that crashed or did not exit 0; the ratio's target (--target) is reported,
not enforced.  Python 3 standard library only (asyncio on raw streams).
"""
import argparse
import asyncio
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

PREAMBLE = ("A scene from a play. The citizens of Rome, hungry and angry, gather in the "
            "street with staves and clubs to speak against the senators and the price of corn.\n\n")
PROMPTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "ROMEO:\n",
    "MENENIUS:\nWhy, masters, my good friends, mine honest neighbours,\nWill you undo yourselves?\n",
    "To be, or not to be",
    "KING RICHARD II:\nNo matter where; of comfort no man speak:\n"
    "Let's talk of graves, of worms, and epitaphs;\n",
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n",
    "Second Citizen:\nWould you proceed especially against Caius Marcius?\n",
    "DUKE VINCENTIO:\n",
]


class Fail(Exception):
    """A request that went wrong: kind is the error's class in the table."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Closed(Exception):
    """The connection closed before a status line (a kept-alive one may)."""


class Conn:
    """One HTTP/1.1 connection, kept alive between requests when it can be."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None
        self.reused = False

    async def open(self):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
            self.reused = False
        else:
            self.reused = True

    def close(self):
        if self.w is not None:
            try:
                self.w.close()
            except Exception:
                pass
        self.r = self.w = None

    async def send(self, method, path, body=None):
        await self.open()
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Accept: */*\r\nUser-Agent: llmux-bench-serve\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.w.write(head.encode() + b"\r\n" + data)
        await self.w.drain()
        line = await self.r.readline()
        if not line:
            raise Closed()
        m = re.match(rb"HTTP/(1\.[01]) (\d{3})", line)
        if not m:
            raise Fail("malformed", f"status line {line[:80]!r}")
        version, status = m.group(1), int(m.group(2))
        headers = {}
        while True:
            h = await self.r.readline()
            if not h:
                raise Fail("malformed", "connection closed in the headers")
            if h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        keep = version == b"1.1" and "close" not in headers.get("connection", "").lower()
        return status, headers, keep

    async def body(self, headers, keep):
        """The body's bytes as they arrive (chunked, Content-Length, or to EOF)."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                line = await self.r.readline()
                if not line:
                    raise Fail("truncated", "connection closed inside a chunked body")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise Fail("malformed", f"chunk size line {line[:40]!r}")
                if size == 0:
                    while True:   # trailers
                        t = await self.r.readline()
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                data = await self.r.readexactly(size)
                if await self.r.readexactly(2) != b"\r\n":
                    raise Fail("malformed", "chunk not followed by CRLF")
                yield data
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                data = await self.r.read(min(left, 1 << 16))
                if not data:
                    raise Fail("truncated", "connection closed before Content-Length bytes")
                left -= len(data)
                yield data
        else:
            keep = False
            while True:
                data = await self.r.read(1 << 16)
                if not data:
                    break
                yield data
        if not keep:
            self.close()

    async def request(self, method, path, body=None):
        """status, headers, body iterator; retries once when a kept-alive connection was closed."""
        for attempt in (0, 1):
            try:
                status, headers, keep = await self.send(method, path, body)
                return status, headers, self.body(headers, keep)
            except (Closed, ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as e:
                was_reused = self.reused
                self.close()
                if attempt == 0 and was_reused:
                    continue
                raise Fail("connection", f"{type(e).__name__} before the status line")
            except OSError as e:
                self.close()
                raise Fail("connection", f"{type(e).__name__}: {e}")

    async def get_json(self, method, path, body=None):
        status, headers, it = await self.request(method, path, body)
        data = b"".join([c async for c in it])
        return status, data


class Stats:
    def __init__(self):
        self.streams = []      # dicts of finished good streams
        self.errors = {}       # kind -> count
        self.examples = []     # first few errors, with when they happened
        self.started = 0

    def error(self, kind, detail, t):
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.examples) < 8:
            self.examples.append(f"{t:7.2f} s  {kind}: {detail}")

    def nerrors(self):
        return sum(self.errors.values())


async def stream_once(conn, body, max_tokens, t_base):
    """One streaming completion, checked; returns its record or raises Fail."""
    t0 = time.monotonic()
    status, headers, it = await conn.request("POST", "/v1/completions", body)
    if status != 200:
        data = b"".join([c async for c in it])
        raise Fail(f"status {status}", data[:200].decode("utf-8", "replace"))
    ctype = headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        raise Fail("malformed", f"Content-Type {ctype!r}")
    buf = b""
    chunk_times = []
    finish = None
    usage = None
    done = False
    text = []
    async for data in it:
        now = time.monotonic()
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line or line.startswith(b":"):
                continue
            if done:
                raise Fail("malformed", f"a line after data: [DONE]: {line[:80]!r}")
            if not line.startswith(b"data:"):
                raise Fail("malformed", f"not an SSE data line: {line[:80]!r}")
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                raise Fail("malformed", f"data not JSON: {payload[:80]!r}")
            if not isinstance(chunk, dict):
                raise Fail("malformed", f"data not an object: {payload[:80]!r}")
            if "error" in chunk:
                raise Fail("error in stream", json.dumps(chunk["error"])[:200])
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                raise Fail("malformed", f"chunk without choices: {payload[:80]!r}")
            for c in choices:
                t = c.get("text")
                if t:
                    chunk_times.append(now)
                    text.append(t)
                if c.get("finish_reason") is not None:
                    if finish is not None:
                        raise Fail("malformed", "two finish_reasons for one choice")
                    finish = c["finish_reason"]
            if chunk.get("usage") and not choices:
                usage = chunk["usage"]
    if buf.strip():
        raise Fail("malformed", f"unterminated line at the end: {buf[:80]!r}")
    t1 = time.monotonic()
    if not done:
        raise Fail("no [DONE]", f"stream ended after {len(chunk_times)} chunks without data: [DONE]")
    if finish is None:
        raise Fail("malformed", "no finish_reason")
    if usage is None:
        raise Fail("malformed", "no usage chunk (stream_options.include_usage)")
    ntok = usage.get("completion_tokens")
    if ntok != max_tokens or finish != "length":
        raise Fail("short", f"{ntok} completion tokens, finish_reason {finish} "
                            f"(ignore_eos, max_tokens {max_tokens})")
    return {"tokens": ntok, "chunks": len(chunk_times), "times": chunk_times,
            "start": t0, "end": t1,
            "ttft": (chunk_times[0] - t0) if chunk_times else None,
            "latency": t1 - t0}


class Bench:
    def __init__(self, a, host, port, model_name, prompts, alive):
        self.a = a
        self.alive = alive
        self.host, self.port = host, port
        self.model_name = model_name
        self.prompts = prompts
        self.seeds = itertools.count(1)
        self.t_base = time.monotonic()

    def body(self, i):
        b = {"prompt": self.prompts[i % len(self.prompts)], "max_tokens": self.a.max_tokens,
             "temperature": 1, "seed": next(self.seeds), "stream": True,
             "stream_options": {"include_usage": True}, "ignore_eos": True}
        if self.model_name:
            b["model"] = self.model_name
        return b

    async def client(self, k, stats, deadline, count=None):
        conn = Conn(self.host, self.port)
        i = k
        while (time.monotonic() < deadline) if count is None else stats.started < count:
            stats.started += 1
            try:
                rec = await asyncio.wait_for(
                    stream_once(conn, self.body(i), self.a.max_tokens, self.t_base), self.a.request_timeout)
                stats.streams.append(rec)
            except Fail as e:
                conn.close()
                stats.error(e.kind, e.detail, time.monotonic() - self.t_base)
            except asyncio.TimeoutError:
                conn.close()
                stats.error("timeout", f"no end after {self.a.request_timeout} s",
                            time.monotonic() - self.t_base)
            except asyncio.IncompleteReadError as e:
                conn.close()
                stats.error("truncated", f"connection closed {len(e.partial)} bytes into a read",
                            time.monotonic() - self.t_base)
            except OSError as e:
                conn.close()
                stats.error("connection", f"{type(e).__name__}: {e}", time.monotonic() - self.t_base)
            i += self.a.clients
            if conn.w is None and stats.nerrors():
                if not self.alive():
                    break
                await asyncio.sleep(0.05)   # no hammering after an error
        conn.close()


def parse_metrics(text):
    vals = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        vals[m.group(1)] = vals.get(m.group(1), 0.0) + v
    return vals


def pick_metrics(names):
    """The names of KV blocks used, free and budget, and sequences running/waiting."""
    env_used = os.environ.get("BENCH_SERVE_KV_USED_METRIC")
    env_total = os.environ.get("BENCH_SERVE_KV_TOTAL_METRIC")
    kv = [n for n in names if "kv" in n.lower() and "block" in n.lower() and "byte" not in n.lower()]
    used = env_used or next((n for n in kv if "used" in n), None)
    free = next((n for n in kv if "free" in n), None)
    total = env_total or next((n for n in kv if re.search(r"total|budget|capacity|max|limit|count$", n)
                               and "used" not in n and "free" not in n), None)
    running = next((n for n in names if "running" in n and "seq" in n), None) or \
        next((n for n in names if "running" in n), None)
    waiting = next((n for n in names if "waiting" in n or "queued" in n), None)
    reserved = next((n for n in kv if "reserved" in n), None)
    return used, free, total, running, waiting, reserved


async def sampler(host, port, names, peaks, stop, t_base):
    used_n, free_n, total_n, run_n, wait_n, res_n = names
    conn = Conn(host, port)
    while not stop.is_set():
        try:
            status, data = await asyncio.wait_for(conn.get_json("GET", "/metrics"), 10)
            if status == 200:
                v = parse_metrics(data.decode("utf-8", "replace"))
                total = v.get(total_n) if total_n else None
                used = v.get(used_n) if used_n else (total - v[free_n] if total is not None and free_n in v else None)
                if used is not None and used > peaks["kv_used"]:
                    peaks["kv_used"], peaks["kv_at"] = used, time.monotonic() - t_base
                if total is not None:
                    peaks["kv_total"] = total if peaks["kv_total"] is None else max(peaks["kv_total"], total)
                if run_n and run_n in v:
                    peaks["running"] = max(peaks["running"], v[run_n])
                if res_n and res_n in v:
                    peaks["reserved"] = max(peaks["reserved"], v[res_n])
                if wait_n and wait_n in v:
                    peaks["waiting"] = max(peaks["waiting"], v[wait_n])
                peaks["samples"] += 1
            else:
                peaks["bad"] += 1
        except (Fail, asyncio.TimeoutError, OSError):
            conn.close()
            peaks["bad"] += 1
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    conn.close()


def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join("    | " + l for l in lines[-n:])
    except OSError:
        return "    (no log)"


async def run(a, host, port, alive):
    # the model's name, the prompts' lengths
    conn = Conn(host, port)
    model_name = None
    status, data = await conn.get_json("GET", "/v1/models")
    if status == 200:
        try:
            model_name = json.loads(data)["data"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError):
            pass
    prompts, lens, ctx = [], [], None
    for i, p in enumerate(PROMPTS):
        p = PREAMBLE + p if i % 2 else p
        status, data = await conn.get_json("POST", "/tokenize", {"prompt": p})
        if status != 200:
            prompts.append(p)
            continue
        j = json.loads(data)
        ctx = j.get("max_model_len", ctx)
        if ctx is None or j["count"] + a.max_tokens <= ctx:
            prompts.append(p)
            lens.append(j["count"])
    conn.close()
    if not prompts:
        raise SystemExit("bench_serve: no prompt fits the context with max_tokens")
    print(f"# model {model_name or '?'} (context {ctx or '?'}); {len(prompts)} prompts of "
          f"{min(lens) if lens else '?'}-{max(lens) if lens else '?'} tokens (half after a shared preamble); "
          f"max_tokens {a.max_tokens}, temperature 1, ignore_eos, a seed each", flush=True)
    b = Bench(a, host, port, model_name, prompts, alive)

    # warm up, then the single-client reference
    single = Stats()
    await b.client(0, single, 0, count=1)
    single.streams, single.started = [], 0
    t0 = time.monotonic()
    await b.client(0, single, t0 + a.single_seconds)
    t1 = time.monotonic()
    s_tokens = sum(r["tokens"] for r in single.streams)
    s_tps = s_tokens / (t1 - t0) if t1 > t0 else 0.0

    # metric names, and the counters before the load
    async def metrics_now():
        conn = Conn(host, port)
        try:
            status, data = await conn.get_json("GET", "/metrics")
        finally:
            conn.close()
        return status, (parse_metrics(data.decode("utf-8", "replace")) if status == 200 else {})
    status, before = await metrics_now()
    names = pick_metrics(list(before.keys()))
    print(f"# /metrics ({'status %d' % status}): KV used {names[0] or (names[1] and 'budget - ' + names[1])}, "
          f"budget {names[2]}, reserved {names[5]}, running {names[3]}, waiting {names[4]}", flush=True)

    # the load
    load = Stats()
    peaks = {"kv_used": -1, "kv_at": None, "kv_total": None, "running": 0, "waiting": 0, "reserved": 0, "samples": 0, "bad": 0}
    stop = asyncio.Event()
    samp = asyncio.create_task(sampler(host, port, names, peaks, stop, b.t_base))
    L0 = time.monotonic()
    deadline = L0 + a.seconds
    tasks = [asyncio.create_task(b.client(k, load, deadline)) for k in range(a.clients)]
    done, pending = await asyncio.wait(tasks, timeout=a.seconds + a.request_timeout + 30)
    L1 = time.monotonic()
    for t in pending:
        t.cancel()
    if pending:
        load.error("hang", f"{len(pending)} clients still running {L1 - L0:.0f} s after the start", L1 - b.t_base)
    stop.set()
    await samp
    _, after = await metrics_now()
    gen_n = next((n for n in after if "generat" in n and "token" in n and n.endswith("_total")), None)
    cached_n = next((n for n in after if "cached" in n and "token" in n and n.endswith("_total")), None)
    prompt_n = next((n for n in after if "prompt" in n and "token" in n and "cached" not in n
                     and n.endswith("_total")), None)
    delta = lambda n: (after.get(n, 0) - before.get(n, 0)) if n else None

    chunks = sum(r["chunks"] for r in load.streams)
    tokens = sum(r["tokens"] for r in load.streams)
    per_chunk = tokens / chunks if chunks else 1.0
    in_window = sum(1 for r in load.streams for t in r["times"] if t <= deadline)
    l_tps = in_window * per_chunk / a.seconds
    ratio = l_tps / s_tps if s_tps > 0 else 0.0

    def row(name, st, tps, secs):
        rs = st.streams
        print(f"{name:<8} {len(rs):>7} {st.nerrors():>6} {sum(r['tokens'] for r in rs):>8} {tps:>9.1f} "
              f"{pct([r['ttft'] for r in rs], 50) * 1e3:>8.0f} {pct([r['ttft'] for r in rs], 95) * 1e3:>8.0f} "
              f"{pct([r['latency'] for r in rs], 50):>7.2f} {pct([r['latency'] for r in rs], 95):>7.2f} "
              f"{pct([r['tokens'] / r['latency'] for r in rs], 50):>9.1f}  {secs:.1f}")
    print(f"{'phase':<8} {'streams':>7} {'errors':>6} {'tokens':>8} {'tok/s':>9} {'ttft p50':>8} {'ttft p95':>8} "
          f"{'lat p50':>7} {'lat p95':>7} {'stream t/s':>9}  seconds")
    row("single", single, s_tps, t1 - t0)
    row(f"load {a.clients}", load, l_tps, L1 - L0)
    kv_used, kv_total = peaks["kv_used"], peaks["kv_total"]
    print(f"# load: {load.started} requests started in {a.seconds:g} s, the last finished {L1 - deadline:.1f} s after; "
          f"tokens/s counts the {in_window} content chunks of the window ({per_chunk:.3f} tokens a chunk); "
          f"/metrics: {peaks['samples']} samples ({peaks['bad']} failed), peak running {peaks['running']:g}, "
          f"peak waiting {peaks['waiting']:g}, KV peak {kv_used:g} of {kv_total if kv_total is None else format(kv_total, 'g')} blocks"
          + (f" at {peaks['kv_at']:.1f} s" if peaks["kv_at"] is not None else "")
          + (f", peak reserved {peaks['reserved']:g}" if names[5] else ""), flush=True)
    if gen_n:
        print(f"# server counters over the load: {delta(gen_n):g} tokens generated (the clients counted "
              f"{tokens})"
              + (f"; {delta(prompt_n):g} prompt tokens" if prompt_n else "")
              + (f", {delta(cached_n):g} of them from cached KV blocks" if cached_n else ""), flush=True)
    for st, name in ((single, "single"), (load, "load")):
        if st.nerrors():
            print(f"# {name} errors: " + ", ".join(f"{k} {v}" for k, v in sorted(st.errors.items())))
            for e in st.examples:
                print(f"#   {e}")
    return single, s_tps, load, l_tps, ratio, peaks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--server", default="bin/llm-serve")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SERVE_SECONDS", 30)))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("BENCH_SERVE_CLIENTS", 64)))
    ap.add_argument("--single-seconds", type=float, default=float(os.environ.get("BENCH_SERVE_SINGLE_SECONDS", 10)))
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-seqs", type=int, default=64)
    ap.add_argument("--target", type=float, default=4.0)
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--log", default="llm-serve.log")
    ap.add_argument("--serve-args", default=os.environ.get("BENCH_SERVE_ARGS", ""),
                    help="more llm-serve options, one string (default $BENCH_SERVE_ARGS)")
    a = ap.parse_args()
    a.server_args = shlex.split(a.serve_args)

    cmd = [a.server, a.model, "--port", "0", "--max-seqs", str(a.max_seqs)] + a.server_args
    logf = open(a.log, "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf)
    failures = []

    def stop_server():
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    try:
        # the listening line, then /health
        url = None
        t0 = time.monotonic()
        while url is None:
            with open(a.log, "rb") as f:
                m = re.search(rb"llm-serve: listening on (http://[^\s]+)", f.read())
            if m:
                url = m.group(1).decode()
                break
            if proc.poll() is not None:
                print(f"bench_serve: {' '.join(cmd)} exited {proc.returncode} before listening:\n{tail(a.log)}")
                return 1
            if time.monotonic() - t0 > 30:
                print(f"bench_serve: no 'listening on' line on stderr in 30 s:\n{tail(a.log)}")
                stop_server()
                return 1
            time.sleep(0.05)
        m = re.match(r"http://([^:/]+):(\d+)", url)
        host, port = m.group(1), int(m.group(2))

        async def health():
            while True:
                conn = Conn(host, port)
                try:
                    status, _ = await conn.get_json("GET", "/health")
                    if status == 200:
                        return True
                except Fail:
                    pass
                finally:
                    conn.close()
                if proc.poll() is not None:
                    return False
                await asyncio.sleep(0.1)
        t1 = time.monotonic()
        try:
            ok = asyncio.run(asyncio.wait_for(health(), 120))
        except asyncio.TimeoutError:
            ok = False
        if not ok:
            print(f"bench_serve: GET /health never answered 200 (server {'exited %s' % proc.returncode if proc.poll() is not None else 'running'}):\n{tail(a.log)}")
            stop_server()
            return 1
        print(f"# llm-serve --max-seqs {a.max_seqs} {' '.join(a.server_args)} listening on {url} "
              f"in {t1 - t0:.2f} s, healthy {time.monotonic() - t1:.2f} s later", flush=True)

        try:
            single, s_tps, load, l_tps, ratio, peaks = asyncio.run(run(a, host, port, lambda: proc.poll() is None))
        except (Fail, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError) as e:
            state = f"exited {proc.returncode}" if proc.poll() is not None else "still running"
            print(f"bench_serve: FAILED: {type(e).__name__}: {e} (llm-serve {state})\n"
                  f"# llm-serve stderr (last lines):\n{tail(a.log)}")
            return 1

        if proc.poll() is not None:
            failures.append(f"the server exited {proc.returncode} during the run")
        errors = single.nerrors() + load.nerrors()
        if errors:
            failures.append(f"{errors} errors")
        if peaks["kv_used"] < 0 or peaks["kv_total"] is None:
            failures.append("no KV blocks used / budget in /metrics")
        elif peaks["kv_used"] > peaks["kv_total"]:
            failures.append(f"KV peak {peaks['kv_used']:g} over the budget {peaks['kv_total']:g}")
        if not load.streams:
            failures.append("no stream finished under load")

        # SIGTERM: exit 0
        if proc.poll() is None:
            ts = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=40)
                print(f"# SIGTERM: llm-serve exited {rc} in {time.monotonic() - ts:.2f} s", flush=True)
                if rc != 0:
                    failures.append(f"llm-serve exited {rc} after SIGTERM")
            except subprocess.TimeoutExpired:
                failures.append("llm-serve still running 40 s after SIGTERM")
                stop_server()

        kv = (f"KV peak {peaks['kv_used']:g} of {peaks['kv_total']:g} blocks" if peaks["kv_total"] is not None
              and peaks["kv_used"] >= 0 else "KV peak unknown (no metrics)")
        nodone = load.errors.get("no [DONE]", 0) + single.errors.get("no [DONE]", 0)
        print(f"serve: {a.clients} clients {a.seconds:g} s: {len(load.streams)} streams, {load.nerrors()} errors"
              + (f" ({nodone} without [DONE])" if nodone else "")
              + f", aggregate {l_tps:.1f} tok/s vs single {s_tps:.1f} tok/s = {ratio:.2f}x (target >= {a.target:g}x)"
              + ("" if ratio >= a.target else " BELOW TARGET") + f"; {kv}")
        if failures:
            print(f"bench_serve: FAILED: {'; '.join(failures)}\n# llm-serve stderr (last lines):\n{tail(a.log)}")
            return 1
        return 0
    finally:
        stop_server()
        logf.close()


if __name__ == "__main__":
    sys.exit(main())
