"""llm-serve against bad requests and bad clients, in raw HTTP (http.client
and sockets, no OpenAI client to tidy the requests up), and its small
endpoints (llm-serve(1)):

  - malformed JSON, fields of the wrong type or out of range: 400 with
    {"error": {"message", "type", "param", "code"}} naming the field;
  - fields the server does not know: ignored;
  - a body over --max-body (4096 here): 413, with a Content-Length and chunked;
  - n over --max-n, a prompt and max_tokens beyond the context: 400;
  - an unknown path: 404; a known path with another method: 405;
  - a client that drips its body one byte a second does not hold up the
    others and is cut off (--timeout 3);
  - a client that goes away in the middle of a stream does not break the
    server;
  - 8 requests at once all succeed, each with the text it gets alone;
  - answers are UTF-8 JSON even when the model makes bytes that are not;
  - /tokenize and /detokenize (against llm-tokenize), /health, /metrics, /.

After every test the server still answers GET /health with 200.
"""
import json
import os
import re
import select
import socket
import threading
import time

import pytest

from common import inspect_json, run
from serve_common import Server, chat_model
from test_train_torch import BIN
from test_train_torch import data  # noqa: F401  the module-scoped fixture

PROMPT = "In the beginning"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
MSGS = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def model(data):  # noqa: F811
    return chat_model(data)


@pytest.fixture(scope="module")
def ctx(model):
    return json.loads(inspect_json(model)["metadata"]["config"])["ctx_len"]


@pytest.fixture(scope="module")
def server(model):
    with Server(model, "--chat-template", "chatml", "--max-body", "4096") as s:
        yield s


@pytest.fixture(scope="module")
def slow_server(model):
    with Server(model, "--chat-template", "chatml", "--timeout", "3") as s:
        yield s


@pytest.fixture(autouse=True)
def still_healthy(request):
    """After each test, every server it used is alive and answers GET /health 200."""
    servers = [request.getfixturevalue(n) for n in ("server", "slow_server") if n in request.fixturenames]
    yield
    for s in servers:
        assert s.proc.poll() is None, f"the server exited ({s.proc.returncode}):\n{s.stderr_text()[-3000:]}"
        status, _, body = s.request("GET", "/health", timeout=10)
        assert status == 200, (status, body)


def parse(body):
    return json.loads(body.decode("utf-8"))


def error_of(answer, status):
    """The error object of an answer that must have this status."""
    got, headers, body = answer
    assert got == status, (got, body[:500])
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = parse(body)
    assert set(doc) == {"error"}, doc
    e = doc["error"]
    assert {"message", "type", "param", "code"} <= set(e), e
    assert isinstance(e["message"], str) and e["message"], e
    assert isinstance(e["type"], str) and e["type"], e
    return e


def names(e, field):
    return field in e["message"] or (isinstance(e["param"], str) and field in e["param"])


def complete(server, **fields):
    req = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    req.update(fields)
    return server.request("POST", COMPLETIONS, req)


# ---- malformed JSON ----

@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
@pytest.mark.parametrize("body", [b'{"prompt": "In the", "max_tokens": 2', b"not json", b"", b"[]", b'"text"',
                                  b'{"prompt": "In the"} {"prompt": "x"}', b'{"prompt": "\xff\xfe"}',
                                  b'{"prompt": "In the", "prompt": }'],
                         ids=["truncated", "word", "empty", "array", "string", "two-docs", "bad-utf8", "no-value"])
def test_malformed_json(server, path, body):
    error_of(server.request("POST", path, body, {"Content-Type": "application/json"}), 400)


# ---- wrong types and out of range ----

WRONG = [
    (COMPLETIONS, "max_tokens", "ten"),
    (COMPLETIONS, "temperature", "hot"),
    (COMPLETIONS, "stop", 7),
    (COMPLETIONS, "prompt", 5),
    (COMPLETIONS, "prompt", [1.5, 2]),
    (COMPLETIONS, "n", "3"),
    (COMPLETIONS, "seed", "x"),
    (COMPLETIONS, "top_p", [1]),
    (COMPLETIONS, "logprobs", "many"),
    (COMPLETIONS, "logit_bias", [1, 2]),
    (COMPLETIONS, "presence_penalty", "x"),
    (COMPLETIONS, "stream", "yes"),
    (CHAT, "messages", 5),
    (CHAT, "messages", [{"role": "user", "content": 5}]),
    (CHAT, "messages", ["hi"]),
    (CHAT, "max_tokens", "ten"),
    (CHAT, "temperature", "hot"),
    (CHAT, "stop", 7),
    (CHAT, "top_logprobs", "2"),
]

RANGE = [
    (COMPLETIONS, "temperature", -1),
    (COMPLETIONS, "top_p", 1.5),
    (COMPLETIONS, "n", 0),
    (COMPLETIONS, "max_tokens", -1),
    (COMPLETIONS, "logprobs", 21),
    (COMPLETIONS, "logit_bias", {"5": 200}),
    (COMPLETIONS, "presence_penalty", 3),
    (COMPLETIONS, "frequency_penalty", -2.5),
    (COMPLETIONS, "stop", ["a", "b", "c", "d", "e"]),
    (COMPLETIONS, "echo", True),
    (CHAT, "top_logprobs", 21),
    (CHAT, "messages", []),
]


def _bad_field(server, path, field, value):
    req = {"prompt": PROMPT, "max_tokens": 4} if path == COMPLETIONS else {"messages": MSGS, "max_tokens": 4}
    req[field] = value
    e = error_of(server.request("POST", path, req), 400)
    # a message's own field may be named instead of "messages"
    also = ("content", "role") if field == "messages" else ()
    assert any(names(e, f) for f in (field, *also)), (field, e)


@pytest.mark.parametrize("path,field,value", WRONG, ids=[f"{p.split('/')[-1]}-{f}-{v!r}" for p, f, v in WRONG])
def test_wrong_type_names_the_field(server, path, field, value):
    _bad_field(server, path, field, value)


@pytest.mark.parametrize("path,field,value", RANGE, ids=[f"{p.split('/')[-1]}-{f}-{v!r}" for p, f, v in RANGE])
def test_out_of_range_names_the_field(server, path, field, value):
    _bad_field(server, path, field, value)


def test_unknown_fields_are_ignored(server):
    plain = complete(server)
    assert plain[0] == 200, plain
    extra = complete(server, frobnicate={"a": [1, 2]}, best_of_x=3, suffix_y=None)
    assert extra[0] == 200, extra
    assert parse(extra[2])["choices"][0]["text"] == parse(plain[2])["choices"][0]["text"]
    chat = server.request("POST", CHAT, {"messages": [{"role": "user", "content": PROMPT, "mood": "x"}],
                                         "max_tokens": 4, "temperature": 0, "whatever": True})
    assert chat[0] == 200, chat


# ---- sizes ----

def _raw(server, head, body_parts, timeout=30):
    """Sends head and the body parts on one socket, then reads the answer
    until the server closes or a whole answer came; returns its status (0 when
    none came) and the bytes."""
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    got = b""
    try:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except OSError:
            pass          # the server may answer and close before reading it all
        sock.settimeout(timeout)
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got:
                head_end = got.index(b"\r\n\r\n") + 4
                m = re.search(rb"(?im)^content-length:\s*(\d+)", got[:head_end])
                if m and len(got) >= head_end + int(m.group(1)):
                    break
    finally:
        sock.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
    return (int(m.group(1)) if m else 0), got


def _head(server, path, length=None, chunked=False):
    h = f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Type: application/json\r\n"
    h += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n"
    return (h + "Connection: close\r\n\r\n").encode()


def _padded(size):
    """A completions request of exactly size bytes (a long unknown field)."""
    base = {"prompt": PROMPT, "max_tokens": 2, "temperature": 0, "pad": ""}
    n = size - len(json.dumps(base).encode())
    base["pad"] = "x" * n
    body = json.dumps(base).encode()
    assert len(body) == size
    return body


def test_body_over_max_body_is_413(server):
    small = _padded(4000)
    assert server.request("POST", COMPLETIONS, small, {"Content-Type": "application/json"})[0] == 200
    big = _padded(5000)
    status, got = _raw(server, _head(server, COMPLETIONS, len(big)), [big])
    assert status == 413, got[:300]
    # much bigger, on the chat path
    big = json.dumps({"messages": [{"role": "user", "content": "y" * 200000}]}).encode()
    status, got = _raw(server, _head(server, CHAT, len(big)), [big])
    assert status == 413, got[:300]


def test_chunked_body_over_max_body_is_413(server):
    big = _padded(6000)
    parts = [b"%x\r\n%s\r\n" % (len(big[i:i + 1000]), big[i:i + 1000]) for i in range(0, len(big), 1000)]
    status, got = _raw(server, _head(server, COMPLETIONS, chunked=True), parts + [b"0\r\n\r\n"])
    assert status == 413, got[:300]
    # and a chunked body under the limit works
    ok = _padded(3000)
    status, got = _raw(server, _head(server, COMPLETIONS, chunked=True),
                       [b"%x\r\n%s\r\n" % (len(ok), ok), b"0\r\n\r\n"])
    assert status == 200, got[:300]


def test_n_over_max_n_is_400(server):
    for n in (1000, 17):
        e = error_of(complete(server, n=n, max_tokens=2), 400)
        assert names(e, "n"), e
    status, _, body = complete(server, n=16, max_tokens=2, temperature=1, seed=1)
    assert status == 200, body
    assert sorted(c["index"] for c in parse(body)["choices"]) == list(range(16))


def test_beyond_the_context_is_400(server, ctx):
    status, _, body = server.request("POST", "/tokenize", {"prompt": PROMPT})
    assert status == 200, body
    p = parse(body)["count"]
    # exactly the context: fine; one more: 400
    status, _, body = complete(server, max_tokens=ctx - p, temperature=0, ignore_eos=True)
    assert status == 200, body
    assert parse(body)["usage"]["completion_tokens"] == ctx - p
    e = error_of(complete(server, max_tokens=ctx - p + 1), 400)
    assert names(e, "max_tokens") or "context" in e["message"], e
    error_of(complete(server, max_tokens=100000), 400)
    # a prompt longer than the context alone
    error_of(complete(server, prompt="In the beginning God " * (ctx // 2), max_tokens=1), 400)
    # chat: max_tokens beyond, and a conversation beyond
    error_of(server.request("POST", CHAT, {"messages": MSGS, "max_tokens": 100000}), 400)
    error_of(server.request("POST", CHAT, {"messages": [{"role": "user", "content": "And God said " * ctx}]}), 400)


# ---- paths and methods ----

@pytest.mark.parametrize("method,path", [("GET", "/v1/nope"), ("POST", "/v1/nope"), ("GET", "/nope"),
                                         ("POST", "/v1/completions/x"), ("GET", "/v1/models/x/y")])
def test_unknown_path_is_404(server, method, path):
    body = {"prompt": PROMPT} if method == "POST" else None
    error_of(server.request(method, path, body), 404)


WRONG_METHOD = [("GET", COMPLETIONS), ("GET", CHAT), ("PUT", COMPLETIONS), ("DELETE", CHAT), ("POST", "/v1/models"),
                ("GET", "/tokenize"), ("GET", "/detokenize"), ("POST", "/health"), ("POST", "/metrics")]


@pytest.mark.parametrize("method,path", WRONG_METHOD)
def test_wrong_method_is_405(server, method, path):
    body = {"prompt": PROMPT} if method in ("POST", "PUT") else None
    error_of(server.request(method, path, body), 405)


@pytest.mark.parametrize("method,path,allowed", [("GET", COMPLETIONS, "POST"), ("GET", CHAT, "POST"),
                                                 ("POST", "/v1/models", "GET"), ("POST", "/health", "GET")])
def test_405_names_the_allowed_methods(server, method, path, allowed):
    """RFC 9110 15.5.6: a 405 answer MUST have an Allow header with the
    methods the resource supports (so not the one just refused)."""
    status, headers, _ = server.request(method, path, {} if method == "POST" else None)
    assert status == 405
    allow = [m.strip() for m in headers.get("allow", "").split(",")]
    assert allowed in allow and method not in allow, headers


def test_head_is_get_without_the_body(server):
    """RFC 9110 9.3.2: HEAD is GET without the content (and all general-purpose
    servers MUST support GET and HEAD, 9.1)."""
    for path in ("/health", "/v1/models"):
        status, headers, body = server.request("HEAD", path)
        assert status == 200, (path, status, headers)
        assert body == b""


# ---- limits of the engine ----

def test_request_bigger_than_the_kv_cache_is_refused(model):
    """--kv-blocks 4 (128 positions): a request that could need more blocks
    than the whole cache can never start; it is answered at once (400), not
    queued for ever. One that fits runs."""
    with Server(model, "--kv-blocks", "4", "--timeout", "20") as s:
        t0 = time.monotonic()
        e = error_of(s.request("POST", COMPLETIONS, {"prompt": PROMPT, "max_tokens": 200}, timeout=30), 400)
        assert time.monotonic() - t0 < 5, e
        error_of(s.request("POST", COMPLETIONS, {"prompt": PROMPT, "max_tokens": 60, "n": 3}, timeout=30), 400)
        status, _, body = s.request("POST", COMPLETIONS, {"prompt": PROMPT, "max_tokens": 50, "n": 2,
                                                          "ignore_eos": True}, timeout=30)
        assert status == 200, body
        assert parse(body)["usage"]["completion_tokens"] == 100


def test_full_queue_is_503(model):
    """--max-seqs 1 --max-queue 1: of 12 long requests sent at once, one runs,
    one waits, the others get 503 with an error object; the two finish."""
    with Server(model, "--max-seqs", "1", "--max-queue", "1") as s:
        barrier = threading.Barrier(12)
        results = [None] * 12

        def go(i):
            barrier.wait()
            results[i] = s.request("POST", COMPLETIONS, {"prompt": PROMPT, "max_tokens": 240, "ignore_eos": True,
                                                         "seed": i}, timeout=60)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(12)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(90)
        statuses = sorted(r[0] for r in results)
        assert statuses.count(503) >= 1 and statuses.count(200) >= 2, statuses
        assert set(statuses) == {200, 503}, statuses
        for r in results:
            if r[0] == 503:
                error_of(r, 503)
            else:
                assert parse(r[2])["usage"]["completion_tokens"] == 240


# ---- bad clients ----

def test_slow_drip_client_is_cut_off_and_blocks_nobody(slow_server):
    s = slow_server
    body = json.dumps({"prompt": PROMPT, "max_tokens": 2, "temperature": 0, "pad": "z" * 40}).encode()
    sock = socket.create_connection((s.host, s.port), timeout=30)
    sock.sendall(_head(s, COMPLETIONS, len(body)).replace(b"Connection: close\r\n", b""))
    result = {}

    def drip():
        t0 = time.monotonic()
        try:
            for b in body[:-1]:            # never the whole body
                ready, _, _ = select.select([sock], [], [], 1.0)
                if ready:
                    data = sock.recv(4096)
                    result["end"] = ("answered", data[:300]) if data else ("closed", b"")
                    break
                sock.send(bytes([b]))
                if time.monotonic() - t0 > 20:
                    break
        except OSError as e:
            result["end"] = ("reset", repr(e).encode())
        result["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        time.sleep(1.5)
        for i in range(4):                 # others get their completions meanwhile, promptly
            t0 = time.monotonic()
            status, _, got = s.request("POST", COMPLETIONS, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                                                             "seed": i}, timeout=10)
            assert status == 200, got
            assert time.monotonic() - t0 < 5
            time.sleep(0.5)
        t.join(25)
    finally:
        sock.close()
    assert "end" in result, f"the server still read a body dripped for {result.get('seconds', 0):.0f} s"
    assert result["seconds"] <= 10, result
    how, data = result["end"]
    if how == "answered":
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        assert m and int(m.group(1)) >= 400, data


def _stream_then_hang_up(server, path, req):
    """Starts a streamed request, reads up to the first data: line, and closes the socket."""
    body = json.dumps(req).encode()
    sock = socket.create_connection((server.host, server.port), timeout=30)
    try:
        sock.sendall(_head(server, path, len(body)) + body)
        got = b""
        while b"data:" not in got:
            chunk = sock.recv(4096)
            assert chunk, f"closed before the first chunk: {got[:300]}"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200"), got[:300]
        assert b"text/event-stream" in got.split(b"\r\n\r\n")[0].lower(), got[:300]
    finally:
        sock.close()


def test_client_gone_mid_stream(server, ctx):
    want = complete(server, max_tokens=8)
    assert want[0] == 200
    p = parse(server.request("POST", "/tokenize", {"prompt": PROMPT})[2])["count"]
    long = min(200, ctx - p)
    for i in range(3):
        _stream_then_hang_up(server, COMPLETIONS, {"prompt": PROMPT, "max_tokens": long, "stream": True,
                                                   "ignore_eos": True, "temperature": 1, "seed": i})
    _stream_then_hang_up(server, CHAT, {"messages": MSGS, "max_tokens": long, "stream": True, "ignore_eos": True,
                                        "n": 4, "seed": 1})
    status, _, metrics = server.request("GET", "/metrics")
    assert status == 200 and b"llmux_" in metrics
    # the abandoned sequences end (cancelled or finished): nothing stays running or reserved
    deadline = time.monotonic() + 10
    while True:
        m = _metrics(server)
        left = {k: m[k] for k in ("llmux_requests_running", "llmux_sequences_running", "llmux_kv_blocks_reserved")}
        if not any(left.values()):
            break
        assert time.monotonic() < deadline, left
        time.sleep(0.1)
    again = complete(server, max_tokens=8)
    assert again[0] == 200
    assert parse(again[2])["choices"][0]["text"] == parse(want[2])["choices"][0]["text"]


def test_concurrent_requests_each_get_their_own_text(server):
    reqs = [(COMPLETIONS, {"prompt": PROMPT, "max_tokens": 12, "temperature": 0}),
            (COMPLETIONS, {"prompt": "And God said", "max_tokens": 20, "temperature": 0.9, "seed": 4}),
            (COMPLETIONS, {"prompt": "And the earth was without form", "max_tokens": 6, "temperature": 0.8,
                           "seed": 2, "n": 3}),
            (COMPLETIONS, {"prompt": "Let", "max_tokens": 16, "temperature": 0, "logprobs": 2}),
            (CHAT, {"messages": MSGS, "max_tokens": 10, "temperature": 0}),
            (CHAT, {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "God"}],
                    "max_tokens": 14, "temperature": 0.7, "seed": 9}),
            (COMPLETIONS, {"prompt": PROMPT + " God created", "max_tokens": 24, "temperature": 1.0, "seed": 8,
                           "top_p": 0.9}),
            (CHAT, {"messages": MSGS, "max_tokens": 9, "temperature": 1.2, "seed": 3, "n": 2})]

    def texts(answer):
        status, _, body = answer
        assert status == 200, body
        doc = json.loads(body.decode("utf-8", "surrogateescape"))
        return [c.get("text", c.get("message", {}).get("content")) for c in sorted(doc["choices"],
                                                                                    key=lambda c: c["index"])]

    alone = [texts(server.request("POST", path, req)) for path, req in reqs]
    for _ in range(2):
        results = [None] * len(reqs)

        def go(i):
            try:
                results[i] = server.request("POST", reqs[i][0], reqs[i][1], timeout=60)
            except Exception as e:   # noqa: BLE001  reported below
                results[i] = e

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(reqs))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(90)
        for i, r in enumerate(results):
            assert not isinstance(r, Exception) and r is not None, (i, r)
            assert texts(r) == alone[i], (i, reqs[i])


def test_answers_are_utf8_json(server):
    """A small model samples lone bytes (>= 0x80) often; the answer is still
    UTF-8 JSON (RFC 8259 section 8.1), streamed or not."""
    req = {"prompt": PROMPT, "max_tokens": 40, "temperature": 1.5, "seed": 1, "n": 8}
    status, headers, body = server.request("POST", COMPLETIONS, req)
    assert status == 200
    body.decode("utf-8")          # strict: raises on bytes that are not UTF-8
    doc = parse(body)
    assert len(doc["choices"]) == 8
    status, _, body = server.request("POST", COMPLETIONS, dict(req, stream=True))
    assert status == 200
    body.decode("utf-8")
    events = [line[len(b"data: "):] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    for ev in events[:-1]:
        parse(ev)


# ---- small endpoints ----

def test_tokenize_detokenize_round_trip(server, model, ctx, tmp_path):
    tok = model.parent / "chat-tok.json"
    for text in (PROMPT, "And God said, Let there be light: and there was light.", "naïve café, 日本語 ✓", " x  y\n"):
        status, _, body = server.request("POST", "/tokenize", {"prompt": text})
        assert status == 200, body
        doc = parse(body)
        (tmp_path / "t.txt").write_text(text)
        want = json.loads(run([f"{BIN}/llm-tokenize", "-t", tok, "-f", "ids", tmp_path / "t.txt"]).stdout)
        assert doc["tokens"] == want, text
        assert doc["count"] == len(want) and doc["max_model_len"] == ctx
        status, _, body = server.request("POST", "/detokenize", {"tokens": doc["tokens"]})
        assert status == 200, body
        assert parse(body) == {"prompt": text}
    # messages: the rendered chat prompt's tokens
    status, _, body = server.request("POST", "/tokenize", {"messages": MSGS})
    assert status == 200, body
    (tmp_path / "c.txt").write_text(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n")
    want = json.loads(run([f"{BIN}/llm-tokenize", "-t", tok, "--allow-special", "-f", "ids",
                           tmp_path / "c.txt"]).stdout)
    assert parse(body)["tokens"] == want
    # bad input
    error_of(server.request("POST", "/tokenize", {"prompt": 5}), 400)
    error_of(server.request("POST", "/detokenize", {"tokens": "abc"}), 400)
    error_of(server.request("POST", "/detokenize", {"tokens": [10 ** 9]}), 400)


def test_health(server):
    status, headers, body = server.request("GET", "/health")
    assert status == 200 and parse(body) == {"status": "ok"}


def test_chat_page(server):
    status, headers, body = server.request("GET", "/")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/html")
    assert b"<html" in body.lower() and b"/v1/chat/completions" in body


def _metrics(server):
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain"), headers
    values = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        assert line.startswith("llmux_"), line
        key, _, value = line.rpartition(" ")
        values[key] = float(value)
    return values


def _one(values, pattern):
    """The value of the one sample whose name (with labels) matches pattern."""
    hits = {k: v for k, v in values.items() if re.search(pattern, k)}
    assert len(hits) == 1, (pattern, sorted(values))
    return next(iter(hits.values()))


def test_metrics(server):
    before = _metrics(server)
    assert before, "no samples in /metrics"
    status, _, body = complete(server, max_tokens=5, temperature=0, ignore_eos=True)
    assert status == 200
    usage = parse(body)["usage"]
    after = _metrics(server)
    assert _one(after, r"^llmux_prompt_tokens_total") - _one(before, r"^llmux_prompt_tokens_total") \
        == usage["prompt_tokens"]
    assert _one(after, r"^llmux_generation_tokens_total") - _one(before, r"^llmux_generation_tokens_total") \
        == usage["completion_tokens"] == 5
    ok = r'^llmux_requests_total\{.*status="2xx"'
    assert _one(after, ok) - _one(before, ok) >= 1
    error_of(complete(server, max_tokens="ten"), 400)
    bad = _metrics(server)
    assert _one(bad, r'^llmux_requests_total\{.*status="400"') >= 1
    used, total = _one(after, r"^llmux_kv_blocks_used"), _one(after, r"^llmux_kv_blocks_total")
    assert 0 <= used <= total and total > 0
    # bytes: the same size per block for the used blocks and the budget
    bytes_used, bytes_total = _one(after, r"^llmux_kv_bytes_used"), _one(after, r"^llmux_kv_bytes_total")
    assert bytes_total > 0 and bytes_used * total == used * bytes_total, (used, total, bytes_used, bytes_total)
    # the histograms counted the request
    for h in ("llmux_time_to_first_token_seconds_count", "llmux_request_duration_seconds_count"):
        assert after[h] - before[h] >= 1, h
    assert _one(after, r"^llmux_requests_running") == 0
    assert _one(after, r"^llmux_requests_waiting") == 0
