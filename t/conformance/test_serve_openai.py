"""llm-serve against the official OpenAI Python client (openai, pinned in
requirements.txt): what the client sends, the server must understand, and
what the server answers, the client must parse into the same text that
llm-infer gives for the same prompt, parameters and seed (llm-serve(1): "a
request gives the text llm-infer gives").

The model is serve_common.chat_model(data): test_infer_torch's trained()
Llama (30 steps; here a context of 256) on a tokenizer that also has ChatML's
<|im_start|> and <|im_end|> (the data fixture of test_train_torch has
<|endoftext|> only, and a chat template whose tokens the tokenizer lacks is
refused), served with --chat-template chatml.

  a) greedy completions (a string, an array of one string, token ids), the
     defaults (max_tokens 16, temperature 1), chat's default max_tokens (the
     rest of the context);
  b) seeded sampling (temperature 0.9, top_p 0.95, seed 11), and the same
     request twice gives the same text; lone bytes become U+FFFD;
  c) n=3 with a seed (3: seed 11's samples have lone bytes early): choice i
     is llm-infer --samples 3's sample i;
  d) stop strings: the text ends before the stop string, finish_reason stop;
  e) logprobs: completions' logprobs=3 and chat's top_logprobs=2 against
     llm-infer --logprobs;
  f) streaming: the deltas add up to the non-streamed text, each choice's
     last chunk has its finish_reason, include_usage adds a usage chunk;
  g) chat completions against llm-infer --requests with the same messages;
  h) models.list() names the model (--model-name too);
  i) presence/frequency penalties, logit_bias, and the extra top_k, min_p,
     repetition_penalty, ignore_eos against llm-infer's flags;
  j) another model's name: NotFoundError;
  k) --api-key (and LLMUX_API_KEY): no key or a wrong one is
     AuthenticationError, the right one works;
  and the prefix cache: a prompt's full blocks are cached_tokens next time.

Logprobs: llm-infer prints 6 significant digits, so "equal" is within 1e-6
plus one unit of the 6th digit (the rounding of both sides).

Sampled text: the test model is small and a sample often contains a lone
byte token (a byte >= 0x80 that is not a UTF-8 character: llm-infer writes it
raw, JSON cannot carry it as text), so the sampled tests use the longest
max_tokens (up to 16, at least 5) for which llm-infer's text is UTF-8; that
keeps what is compared well defined (a test of its own checks the lone
bytes). The logprobs tests' prompts are under 32 tokens: a cached prefix
block may change the last bits of the logits (llm-serve(1)).
"""
import json
import math
import os

import pytest

from common import run
from serve_common import Server, chat_model
from test_train_torch import BIN
from test_train_torch import data  # noqa: F401  the module-scoped fixture

openai = pytest.importorskip("openai")

INFER = os.path.join(BIN, "llm-infer")
PROMPT = "In the beginning"
NAME = "llama.chat256"            # the file name without its directory and .safetensors
SYSTEM = "You are terse."


@pytest.fixture(scope="module")
def model(data):  # noqa: F811
    return chat_model(data)


@pytest.fixture(scope="module")
def server(model):
    with Server(model, "--chat-template", "chatml") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


# ---- llm-infer, the reference ----

def infer(model, prompt, n, *args):
    """llm-infer MODEL -p PROMPT -n N ARGS -f jsonl, parsed."""
    out = run([INFER, model, "-p", prompt, "-n", n, *args, "-f", "jsonl"]).stdout.decode("utf-8", "surrogateescape")
    return json.loads(out)


def infer_request(model, req):
    """llm-infer MODEL --requests - --chat-template chatml -f jsonl with one request line."""
    out = run([INFER, model, "--requests", "-", "--chat-template", "chatml", "-f", "jsonl"],
              stdin=(json.dumps(req) + "\n").encode()).stdout.decode("utf-8", "surrogateescape")
    return json.loads(out)


def choices_of(ref):
    return ref.get("choices") or [dict(ref, index=0)]


def utf8(text):
    """True when text came from valid UTF-8 (no \\udcXX escapes of lone bytes)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def clean_length(fn, longest=16, shortest=5):
    """The largest n in [shortest, longest] for which fn(n) (a llm-infer
    result) has UTF-8 text in every choice, and that result."""
    for n in range(longest, shortest - 1, -1):
        ref = fn(n)
        if all(utf8(c["text"]) for c in choices_of(ref)):
            return n, ref
    raise AssertionError(f"llm-infer's text is not UTF-8 at any length from {shortest} to {longest}: "
                         "pick another prompt or seed")


def close(a, b):
    """Equal logprobs: within 1e-6 plus llm-infer's rounding to 6 significant digits (on both sides)."""
    m = max(abs(a), abs(b), 1e-30)
    return abs(a - b) <= 1e-6 + 10.0 ** (math.floor(math.log10(m)) - 5)


def collect(stream, chat=False):
    """A stream's chunks: ({index: text}, {index: finish_reason}, usage chunk or None, chunk count).
    Checks on the way: nothing of a choice after its finish_reason, nothing after the usage chunk."""
    texts, finish, usage, count = {}, {}, None, 0
    for chunk in stream:
        count += 1
        assert usage is None, f"a chunk after the usage chunk: {chunk}"
        if chunk.usage is not None:
            assert chunk.choices == [], f"the usage chunk has choices: {chunk}"
            usage = chunk.usage
            continue
        for c in chunk.choices:
            assert c.index not in finish, f"choice {c.index} has a chunk after its finish_reason: {chunk}"
            part = (c.delta.content if chat else c.text) or ""
            texts[c.index] = texts.get(c.index, "") + part
            if c.finish_reason is not None:
                finish[c.index] = c.finish_reason
    return texts, finish, usage, count


# ---- a) greedy completions ----

@pytest.mark.parametrize("prompt", [PROMPT, "And God said", "And the earth was"])
def test_greedy_completion_is_llm_infers(model, client, prompt):
    ref = infer(model, prompt, 16, "--temp", "0")
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0)
    assert r.object == "text_completion"
    assert r.model == NAME
    assert r.id and isinstance(r.created, int)
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].text == ref["text"]
    assert r.choices[0].finish_reason == ref["finish_reason"]
    assert r.usage.prompt_tokens == ref["prompt_tokens"]
    assert r.usage.completion_tokens == ref["completion_tokens"] == len(ref["ids"])
    assert r.usage.total_tokens == ref["prompt_tokens"] + ref["completion_tokens"]


def test_prompt_forms_give_the_same_text(model, server, client):
    """A prompt as a string, as an array of one string, and as its token ids (from /tokenize)."""
    ref = infer(model, PROMPT, 12, "--temp", "0")
    ids = _tokenize(server, PROMPT)
    assert len(ids) == ref["prompt_tokens"]
    for prompt in ([PROMPT], ids):
        r = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0)
        assert r.choices[0].text == ref["text"], prompt
        assert r.usage.prompt_tokens == ref["prompt_tokens"]


def _tokenize(server, prompt):
    status, _, body = server.request("POST", "/tokenize", {"prompt": prompt})
    assert status == 200, body
    return json.loads(body)["tokens"]


def test_defaults(model, client):
    """max_tokens 16, temperature 1 and top_p 1 when the request names none (llm-serve(1))."""
    ref = infer(model, PROMPT, 16, "--temp", "0", "--ignore-eos")
    r = client.completions.create(model=NAME, prompt=PROMPT, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16
    assert r.choices[0].text == ref["text"]
    # temperature 1 (seed 2: its 16 tokens are UTF-8 text)
    ref = infer(model, PROMPT, 16, "--temp", "1", "--seed", "2")
    assert utf8(ref["text"]), "pick another seed"
    r = client.completions.create(model=NAME, prompt=PROMPT, seed=2)
    assert r.choices[0].text == ref["text"]
    # OpenAI's user and echo=false are accepted
    r = client.completions.create(model=NAME, prompt=PROMPT, seed=2, user="someone", echo=False)
    assert r.choices[0].text == ref["text"]


def test_chat_max_tokens_defaults_to_the_rest_of_the_context(model, server, client):
    ctx = json.loads(server.request("POST", "/tokenize", {"prompt": "x"})[2])["max_model_len"]
    msgs = [{"role": "user", "content": PROMPT}]
    r = client.chat.completions.create(model=NAME, messages=msgs, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == ctx - r.usage.prompt_tokens
    assert r.choices[0].finish_reason == "length"


def test_lone_bytes_become_replacement_characters(model, client):
    """Sampled text with bytes that are not UTF-8: the answer carries each
    maximal invalid sequence as U+FFFD, as a UTF-8 decoder replaces them
    (Unicode's "maximal subparts", Python's errors="replace"), the same as
    llm-infer's JSON lines; the streamed deltas add up to the same text."""
    kw = dict(model=NAME, prompt=PROMPT, max_tokens=24, temperature=1.5)
    seen = 0
    for seed in range(6):
        ref = infer(model, PROMPT, 24, "--temp", "1.5", "--seed", str(seed))
        raw = run([BIN + "/llm-infer", model, "-p", PROMPT, "-n", "24", "--temp", "1.5", "--seed", str(seed)]).stdout
        want = raw[:-1].decode("utf-8", "replace")   # the text as bytes (and its newline), decoded by Python
        assert ref["text"] == want, seed
        seen += "\ufffd" in want
        r = client.completions.create(**kw, seed=seed)
        assert r.choices[0].text == want, seed
        texts, _, _, _ = collect(client.completions.create(**kw, seed=seed, stream=True))
        assert texts.get(0, "") == want, seed
    assert seen >= 2, "too few samples with lone bytes to check anything: raise the temperature"


def test_model_name(model):
    with Server(model, "--model-name", "my-model") as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in c.models.list().data] == ["my-model"]
        r = c.completions.create(model="my-model", prompt=PROMPT, max_tokens=2)
        assert r.model == "my-model"
        with pytest.raises(openai.NotFoundError):
            c.completions.create(model=NAME, prompt=PROMPT, max_tokens=2)


def test_prefix_cache(model, client):
    """A prompt's full 32-position blocks are kept: the same prompt again has
    them as usage.prompt_tokens_details.cached_tokens, and the same text."""
    prompt = ("And God said, Let there be light: and there was light. And God saw the light, that it was good: "
              "and God divided the light")
    ref = infer(model, prompt, 6, "--temp", "0")
    p = ref["prompt_tokens"]
    assert p > 32 and p % 32, "the prompt should fill at least one block and end inside another"
    first = client.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0)
    second = client.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0)
    assert first.choices[0].text == second.choices[0].text == ref["text"]
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 32 * (p // 32)
    # a prompt that shares only the first block's tokens
    longer = client.completions.create(model=NAME, prompt=prompt + " from the darkness", max_tokens=2,
                                       temperature=0)
    assert longer.usage.prompt_tokens_details.cached_tokens == 32 * (p // 32)


# ---- b) seeded sampling ----

def test_seeded_sampling_is_llm_infers(model, client):
    n, ref = clean_length(lambda n: infer(model, PROMPT, n, "--temp", "0.9", "--top-p", "0.95", "--seed", "11"))
    kw = dict(model=NAME, prompt=PROMPT, max_tokens=n, temperature=0.9, top_p=0.95, seed=11)
    r = client.completions.create(**kw)
    assert r.choices[0].text == ref["text"]
    assert r.usage.completion_tokens == ref["completion_tokens"]
    again = client.completions.create(**kw)
    assert again.choices[0].text == r.choices[0].text
    # and the seed matters: another seed's reference differs (so equality above is not greedy by accident)
    other = infer(model, PROMPT, n, "--temp", "0.9", "--top-p", "0.95", "--seed", "12")
    assert other["ids"] != ref["ids"]


# ---- c) n choices ----

def test_n_choices_are_llm_infers_samples(model, client):
    n, ref = clean_length(lambda n: infer(model, PROMPT, n, "--temp", "0.9", "--top-p", "0.95", "--seed", "3",
                                          "--samples", "3"))
    want = choices_of(ref)
    assert len(want) == 3
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=n, temperature=0.9, top_p=0.95, seed=3, n=3)
    got = sorted(r.choices, key=lambda c: c.index)
    assert [c.index for c in got] == [0, 1, 2]
    assert [c.text for c in got] == [c["text"] for c in want]
    assert [c.finish_reason for c in got] == [c["finish_reason"] for c in want]
    assert r.usage.completion_tokens == ref["completion_tokens"]
    assert r.usage.prompt_tokens == ref["prompt_tokens"]


# ---- d) stop strings ----

def test_stop_string_cuts_the_text(model, client):
    full = infer(model, PROMPT, 16, "--temp", "0")["text"]
    # a stop string that first appears after some text: the greedy text has " said," repeated
    stop = next(s for s in (" said,", ", ", " and", "the") if full.find(s) > 0)
    want = full[:full.index(stop)]
    ref = infer(model, PROMPT, 16, "--temp", "0", "--stop", stop)
    assert ref["text"] == want and ref["finish_reason"] == "stop"
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=0, stop=stop)
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "stop"
    # a list of stop strings: the earliest one in the text wins
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=0,
                                  stop=["zzz", stop, "qqq"])
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    # streamed: no chunk carries a part of the stop string
    texts, finish, _, _ = collect(client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=0,
                                                            stop=stop, stream=True))
    assert texts.get(0, "") == want and finish == {0: "stop"}


# ---- e) logprobs ----

def test_completion_logprobs_are_llm_infers(model, client):
    ref = infer(model, PROMPT, 10, "--temp", "0", "--logprobs", "3")
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=10, temperature=0, logprobs=3)
    c = r.choices[0]
    assert c.text == ref["text"]
    lp = c.logprobs
    assert lp is not None
    assert len(lp.token_logprobs) == len(ref["logprobs"]) == ref["completion_tokens"]
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(lp.token_logprobs, ref["logprobs"])) if not close(a, b)]
    assert not bad, bad
    assert len(lp.tokens) == len(ref["ids"])
    assert "".join(lp.tokens) == c.text
    assert len(lp.top_logprobs) == len(ref["top_logprobs"])
    for i, (got, want) in enumerate(zip(lp.top_logprobs, ref["top_logprobs"])):
        assert len(got) == 3, (i, got)
        vals = sorted(got.values(), reverse=True)
        assert all(close(a, b["logprob"]) for a, b in zip(vals, want)), (i, got, want)
        # greedy: the chosen token is the most likely one
        assert close(vals[0], lp.token_logprobs[i])
    if lp.text_offset is not None:      # each token starts where the one before ends
        assert lp.text_offset == [lp.text_offset[0] + len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]


def test_chat_logprobs_are_llm_infers(model, client):
    msgs = [{"role": "user", "content": PROMPT}]
    ref = infer_request(model, {"messages": msgs, "max_tokens": 10, "temperature": 0, "top_logprobs": 2})
    r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=10, temperature=0, logprobs=True,
                                       top_logprobs=2)
    c = r.choices[0]
    assert c.message.content == ref["text"]
    content = c.logprobs.content
    assert len(content) == ref["completion_tokens"] == len(ref["logprobs"])
    for i, (t, want, alts) in enumerate(zip(content, ref["logprobs"], ref["top_logprobs"])):
        assert close(t.logprob, want), (i, t.logprob, want)
        assert len(t.top_logprobs) == 2, (i, t.top_logprobs)
        assert all(close(a.logprob, b["logprob"]) for a, b in zip(t.top_logprobs, alts)), (i, t.top_logprobs, alts)
        if t.bytes is not None:
            assert bytes(t.bytes) == t.token.encode("utf-8"), (i, t)
    assert "".join(t.token for t in content) == c.message.content
    # without logprobs, none
    r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=4, temperature=0)
    assert r.choices[0].logprobs is None


# ---- f) streaming ----

def test_streamed_completion_adds_up(model, client):
    kw = dict(model=NAME, prompt=PROMPT, max_tokens=16, temperature=0)
    whole = client.completions.create(**kw)
    texts, finish, usage, count = collect(client.completions.create(**kw, stream=True))
    assert texts == {0: whole.choices[0].text}
    assert finish == {0: whole.choices[0].finish_reason}
    assert usage is None
    assert count >= 2          # streamed, not one chunk
    texts, finish, usage, _ = collect(client.completions.create(**kw, stream=True,
                                                                stream_options={"include_usage": True}))
    assert texts == {0: whole.choices[0].text}
    assert usage is not None, "no usage chunk with include_usage"
    assert usage.completion_tokens == whole.usage.completion_tokens == 16
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_streamed_n_choices_add_up(model, client):
    n, ref = clean_length(lambda n: infer(model, PROMPT, n, "--temp", "0.9", "--seed", "3", "--samples", "3"))
    texts, finish, usage, _ = collect(client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=n, temperature=0.9, seed=3, n=3, stream=True,
        stream_options={"include_usage": True}))
    want = choices_of(ref)
    assert texts == {i: c["text"] for i, c in enumerate(want)}
    assert finish == {i: c["finish_reason"] for i, c in enumerate(want)}
    assert usage.completion_tokens == ref["completion_tokens"]


def test_streamed_chat_adds_up(model, client):
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    kw = dict(model=NAME, messages=msgs, max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**kw)
    stream = client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    roles = [c.delta.role for ch in chunks for c in ch.choices if c.delta.role]
    assert roles and set(roles) == {"assistant"}
    texts, finish, usage, _ = collect(iter(chunks), chat=True)
    assert texts == {0: whole.choices[0].message.content}
    assert finish == {0: whole.choices[0].finish_reason}
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_streamed_logprobs_add_up(client):
    """Streamed, each token's logprob comes with its chunk: together, the non-streamed list."""
    kw = dict(model=NAME, messages=[{"role": "user", "content": PROMPT}], max_tokens=6, temperature=0, logprobs=True,
              top_logprobs=2)
    whole = [(t.token, t.logprob) for t in client.chat.completions.create(**kw).choices[0].logprobs.content]
    parts = [(t.token, t.logprob) for ch in client.chat.completions.create(**kw, stream=True) for c in ch.choices
             if c.logprobs and c.logprobs.content for t in c.logprobs.content]
    assert parts == whole and len(whole) == 6
    kw = dict(model=NAME, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    whole = client.completions.create(**kw).choices[0].logprobs.token_logprobs
    parts = [x for ch in client.completions.create(**kw, stream=True) for c in ch.choices if c.logprobs
             for x in c.logprobs.token_logprobs]
    assert parts == whole and len(whole) == 6


# ---- g) chat ----

@pytest.mark.parametrize("msgs", [
    [{"role": "user", "content": PROMPT}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
    [{"role": "user", "content": "And God said"}, {"role": "assistant", "content": " Let there be light"},
     {"role": "user", "content": "And the earth"}],
], ids=["user", "system", "turns"])
def test_chat_is_llm_infers(model, client, msgs):
    ref = infer_request(model, {"messages": msgs, "max_tokens": 12, "temperature": 0})
    r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=12, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == NAME
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content == ref["text"]
    assert c.finish_reason == ref["finish_reason"]
    assert r.usage.prompt_tokens == ref["prompt_tokens"]
    assert r.usage.completion_tokens == ref["completion_tokens"]
    # max_completion_tokens is the same limit
    r2 = client.chat.completions.create(model=NAME, messages=msgs, max_completion_tokens=12, temperature=0)
    assert r2.choices[0].message.content == ref["text"]


def test_chat_content_parts(model, client):
    """content as an array of one text part renders as the string does."""
    ref = infer_request(model, {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "temperature": 0})
    r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": [{"type": "text",
                                                                                           "text": PROMPT}]}],
                                       max_tokens=8, temperature=0)
    assert r.choices[0].message.content == ref["text"]
    assert r.usage.prompt_tokens == ref["prompt_tokens"]


def test_chat_ends_at_the_templates_end_token(model, client):
    """A bias that forces <|im_end|>: the answer is empty and ends with stop."""
    tok = json.loads((model.parent / "chat-tok.json").read_text())
    end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
    msgs = [{"role": "user", "content": PROMPT}]
    ref = infer_request(model, {"messages": msgs, "temperature": 0, "max_tokens": 8, "logit_bias": {str(end): 100}})
    assert ref["completion_tokens"] == 0 and ref["finish_reason"] == "stop"
    r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=8, temperature=0,
                                       logit_bias={str(end): 100})
    assert r.choices[0].message.content == ""
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 0


# ---- h) models ----

def test_models_list_names_the_model(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [NAME]
    assert models.data[0].object == "model"


# ---- i) penalties, logit_bias, extras ----

def test_penalties_and_bias_are_llm_infers(model, client):
    plain = infer(model, PROMPT, 16, "--temp", "0")
    # penalties
    ref = infer(model, PROMPT, 16, "--temp", "0", "--presence-penalty", "1.5", "--frequency-penalty", "0.5")
    assert ref["ids"] != plain["ids"], "the penalties change nothing here: pick other values"
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=0, presence_penalty=1.5,
                                  frequency_penalty=0.5)
    assert r.choices[0].text == ref["text"]
    # frequency alone (it differs from presence: per occurrence)
    ref = infer(model, PROMPT, 16, "--temp", "0", "--frequency-penalty", "1.2")
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=0, frequency_penalty=1.2)
    assert r.choices[0].text == ref["text"]
    # logit_bias: ban the first greedy token, favour another
    first = plain["ids"][0]
    ref = infer(model, PROMPT, 16, "--temp", "0", "--logit-bias", f"{first}=-100")
    assert ref["ids"][0] != first
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=0,
                                  logit_bias={str(first): -100})
    assert r.choices[0].text == ref["text"]
    # sampled, all together
    n, ref = clean_length(lambda n: infer(model, PROMPT, n, "--temp", "0.9", "--seed", "5", "--presence-penalty",
                                          "0.7", "--frequency-penalty", "0.3", "--logit-bias", f"{first}=-100",
                                          "--logit-bias", "268=3"))
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=n, temperature=0.9, seed=5,
                                  presence_penalty=0.7, frequency_penalty=0.3,
                                  logit_bias={str(first): -100, "268": 3})
    assert r.choices[0].text == ref["text"]


def test_chat_penalties_are_llm_infers(model, client):
    msgs = [{"role": "user", "content": PROMPT}]
    req = {"messages": msgs, "max_tokens": 12, "temperature": 0, "presence_penalty": 1.5, "frequency_penalty": 0.5,
           "logit_bias": {"223": -100}}
    ref = infer_request(model, req)
    r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=12, temperature=0, presence_penalty=1.5,
                                       frequency_penalty=0.5, logit_bias={"223": -100})
    assert r.choices[0].message.content == ref["text"]


def test_extra_sampling_fields_are_llm_infers(model, client):
    """top_k, min_p, repetition_penalty (not OpenAI's: extra_body) as llm-infer's --top-k, --min-p, --repeat-penalty."""
    n, ref = clean_length(lambda n: infer(model, PROMPT, n, "--temp", "1.1", "--seed", "9", "--top-k", "5",
                                          "--min-p", "0.1", "--repeat-penalty", "1.3"))
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=n, temperature=1.1, seed=9,
                                  extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.3})
    assert r.choices[0].text == ref["text"]
    # ignore_eos with a bias that forces the end token: llm-infer goes on and so does the server
    ref = infer(model, PROMPT, 6, "--temp", "0", "--ignore-eos", "--logit-bias", "0=100")
    assert ref["completion_tokens"] == 6
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=6, temperature=0, logit_bias={"0": 100},
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == ref["text"] and r.usage.completion_tokens == 6
    # and without ignore_eos, the end token ends it at once
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=6, temperature=0, logit_bias={"0": 100})
    assert r.choices[0].text == "" and r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 0


# ---- j) another model ----

def test_wrong_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=2)
    assert e.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2)


# ---- k) API keys ----

NO_AUTH = {"Authorization": openai.Omit()}   # the client sends no Authorization header at all


def _check_keys(url, right, wrongs):
    for key in wrongs:
        c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        with pytest.raises(openai.AuthenticationError) as e:
            c.completions.create(model=NAME, prompt=PROMPT, max_tokens=2, temperature=0)
        assert e.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
    c = openai.OpenAI(base_url=url + "/v1", api_key=right, max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        c.completions.create(model=NAME, prompt=PROMPT, max_tokens=2, temperature=0, extra_headers=NO_AUTH)
    r = c.completions.create(model=NAME, prompt=PROMPT, max_tokens=2, temperature=0)
    assert r.usage.completion_tokens == 2
    assert [m.id for m in c.models.list().data] == [NAME]


def test_api_key(model):
    # the flag wins over the environment
    with Server(model, "--api-key", "sekrit", env={"LLMUX_API_KEY": "other"}) as s:
        _check_keys(s.url, "sekrit", ["wrong", "sekri", "sekrit2", "other"])
        # GET /health, GET /metrics (a Prometheus scraper) and GET / need no
        # key (llm-serve(1)); everything else does
        assert s.request("GET", "/health")[0] == 200
        assert s.request("GET", "/metrics")[0] == 200
        assert s.request("GET", "/")[0] == 200
        wrong = []
        for method, path, body in (("POST", "/tokenize", {"prompt": PROMPT}),
                                   ("POST", "/detokenize", {"tokens": [1]}), ("GET", "/v1/models", None)):
            without = s.request(method, path, body)[0]
            with_key = s.request(method, path, body, {"Authorization": "Bearer sekrit"})[0]
            if (without, with_key) != (401, 200):
                wrong.append(f"{method} {path}: {without} without the key, {with_key} with it")
        assert not wrong, wrong


def test_api_key_from_the_environment(model):
    with Server(model, env={"LLMUX_API_KEY": "envkey"}) as s:
        _check_keys(s.url, "envkey", ["wrong"])
