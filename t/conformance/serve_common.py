"""Starting and stopping bin/llm-serve for the tests that talk to it.

    with Server(model, "--chat-template", "chatml") as s:
        status, headers, body = s.request("GET", "/health")
        ...
    # leaving the block sends SIGTERM, waits, and (when the block raised
    # nothing) asserts that the server exited 0

The server listens on a free port (--port 0 is added unless the arguments
name --port), read from its first stderr line
    llm-serve: listening on http://127.0.0.1:PORT
and Server waits until GET /health answers 200 (the model is loaded).
Its stderr goes to a temporary file, so that a chatty server never blocks
on a full pipe; every timeout or early exit raises an error that quotes it.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time

from common import ROOT

SERVE = os.path.join(ROOT, "bin", "llm-serve")
LISTENING = re.compile(r"llm-serve: listening on (http://(\S+):(\d+))\s*$", re.M)


class ServerError(AssertionError):
    pass


class Server:
    """bin/llm-serve MODEL ARGS... as a context manager.

    env: variables to set on top of os.environ (a value of None removes one).
    ready: wait for GET /health to answer 200 (else only for the listening line).
    check_exit: on leaving the block without an exception, assert exit status 0.
    """

    def __init__(self, model, *args, env=None, timeout=60, ready=True, check_exit=True, stop_timeout=30):
        self.model = str(model)
        self.args = [str(a) for a in args]
        if not any(a == "--port" or a.startswith("--port=") for a in self.args):
            self.args += ["--port", "0"]
        self.env = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.timeout = timeout
        self.ready = ready
        self.check_exit = check_exit
        self.stop_timeout = stop_timeout
        self.proc = None
        self.returncode = None
        self.url = self.host = self.port = None
        self._err = None

    # ---- starting ----
    def start(self):
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([SERVE, self.model, *self.args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err, env=self.env)
        try:
            self._wait_listening()
            if self.ready:
                self.wait_health()
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, what):
        raise ServerError(f"llm-serve {self.model} {' '.join(self.args)}: {what}\n"
                          f"--- its stderr ---\n{self.stderr_text()}")

    def _wait_listening(self):
        deadline = time.monotonic() + self.timeout
        while True:
            m = LISTENING.search(self.stderr_text())
            if m:
                self.url, self.host, self.port = m.group(1), m.group(2).strip("[]"), int(m.group(3))
                return
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} before listening")
            if time.monotonic() > deadline:
                self._fail(f"no 'listening on' line on stderr within {self.timeout} s")
            time.sleep(0.05)

    def wait_health(self, timeout=None):
        """Polls GET /health until it answers 200."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last = None
        while True:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} before GET /health answered 200 "
                           f"(last answer: {last})")
            try:
                status, _, body = self.request("GET", "/health", timeout=5)
                last = f"{status} {body[:200]!r}"
                if status == 200:
                    return
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                self._fail(f"GET /health did not answer 200 within {timeout or self.timeout} s "
                           f"(last answer: {last})")
            time.sleep(0.1)

    # ---- talking to it ----
    def request(self, method, path, body=None, headers=None, timeout=60):
        """One HTTP request on a fresh connection: (status, headers as a dict with
        lower-case names, body bytes). A dict or list body is sent as JSON."""
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def stderr_text(self):
        if self._err is None:
            return ""
        self._err.flush()
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    # ---- stopping ----
    def stop(self, sig=signal.SIGTERM):
        """Sends sig (SIGTERM), waits up to stop_timeout s and returns the exit
        status; a server that does not exit by then is killed (status -9)."""
        if self.proc is None:
            return None
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.returncode = self.proc.returncode
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        rc = self.stop()
        if self.check_exit and exc_type is None and rc != 0:
            self._fail(f"exited with status {rc} after SIGTERM (expected 0)")
        return False

    def __del__(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def chat_model(d, name="llama", ctx=256, steps=30):
    """A model for the server tests, made in D, the directory of
    test_train_torch's `data` fixture (from its text.txt): a tokenizer with
    the chatml markers as special tokens (the fixture's has <|endoftext|>
    only, and a chat template's markers must be single tokens), and
    test_train_torch's config NAME with a context of CTX, trained STEPS steps
    as test_infer_torch.trained does."""
    from common import run
    from test_train_torch import BIN, CONFIGS, T
    path = d / f"{name}.chat{ctx}.safetensors"
    if path.exists():
        return path
    tok, shards = d / "chat-tok.json", d / "chat-data"
    if not tok.exists():
        specials = [a for s in CHAT_SPECIALS for a in ("--special", s)]
        run([f"{BIN}/llm-tokenize", "train", "--vocab-size", "300", *specials, "-o", tok, d / "text.txt"])
    if not shards.exists():
        run([f"{BIN}/llm-tokenize", "-t", tok, d / "text.txt", "-o", d / "chat-docs.stream"])
        run([f"{BIN}/llm-shard", "--seq", str(T), "-o", shards, d / "chat-docs.stream"])
    args = list(CONFIGS[name])
    args[args.index("--ctx") + 1] = str(ctx)
    run([f"{BIN}/llm-train", "--tokenizer", tok, *args, "--seed", "7", shards, "--steps", steps,
         "--lr", "3e-3", "--schedule", "constant", "-o", path])
    return path
