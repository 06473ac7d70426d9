"""Chat rendering conformance: lib/chat.c against the models' own Jinja chat
templates (the "chat_template" of their tokenizer_config.json), rendered with
jinja2 the way transformers' apply_chat_template does (sandboxed environment,
trim_blocks, lstrip_blocks, raise_exception).

  a) the concatenated segments equal the template's rendering, for ChatML
     (generic and Qwen2's), Llama-2-chat and Llama-3-Instruct, on fixed and
     random conversations (whitespace, Unicode, special-token strings in content);
  b) the trained bytes are exactly, for each assistant message i, the text the
     template adds between messages[:i] + generation prompt and messages[:i+1]
     (less ChatML's trailing "\\n", which we leave untrained);
  c) conversations the Llama 2 template refuses (roles that do not alternate)
     are refused by us too.

`build/t/test_chat --render` does the C side: JSON lines {"format", "record"}
in, {"segments": [[text, trained, special, eos], ...]} or {"error"} out.
"""
import json
import os
import random

import pytest

jinja2 = pytest.importorskip("jinja2")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from common import ROOT, run  # noqa: E402

RENDER = os.path.join(ROOT, "build", "t", "test_chat")

# ---- the templates, as the models ship them ----

# The ChatML template of the transformers chat-templating docs (no default system).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# Qwen/Qwen2-7B-Instruct: ChatML with a default system message when there is none.
QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
         "assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
QWEN2_DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"

# meta-llama/Llama-2-7b-chat-hf
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
          "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
          "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
          "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}"
          "{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == "
          "'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
          "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

# format -> (template, bos, eos, text the template adds after <end token> that we leave untrained)
FORMATS = {
    "chatml": (CHATML, "", "", "\n"),
    "llama2": (LLAMA2, "<s>", "</s>", ""),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", ""),
}


class TemplateError(Exception):
    pass


def _raise(msg):
    raise TemplateError(msg)


_env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
_env.globals["raise_exception"] = _raise
_compiled = {}


def jinja(template, messages, bos="", eos="", add_generation_prompt=False):
    t = _compiled.get(template) or _compiled.setdefault(template, _env.from_string(template))
    return t.render(messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=add_generation_prompt)


def ours(jobs):
    """Renders [(format, record)] with lib/chat.c in one process."""
    stdin = "".join(json.dumps({"format": f, "record": r}) + "\n" for f, r in jobs).encode()
    out = run([RENDER, "--render"], stdin=stdin).stdout.decode().splitlines()
    assert len(out) == len(jobs)
    return [json.loads(line) for line in out]


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.access(RENDER, os.X_OK):
        pytest.fail(f"{RENDER} is not built (run 'make unit-tests' in {ROOT})")


# ---- conversations ----

def conv(*pairs, system=None):
    msgs = [] if system is None else [{"role": "system", "content": system}]
    for i, text in enumerate(pairs):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return msgs


FIXED = {
    "one_turn": conv("Hi", "Hello!"),
    "system": conv("Hi", "Hello!", system="Be brief."),
    "multi": conv("U1", "A1", "U2", "A2", "U3", "A3", system="S"),
    "multi_no_system": conv("What is 2+2?", "4.", "And 3+3?", "6."),
    "ends_with_user": conv("U1", "A1", "U2"),
    "only_user": conv("Just a question"),
    "whitespace": conv("  Hi there \n", "\n\n Hello \t", " again\u3000", "\u00a0ok\u2003 \n"),
    "whitespace_system": conv("  lead\n", " ans ", system=" \n sys \n "),
    "empty_system": conv("Hi", "Yo", system=""),
    "user_blank_after_system": conv(" \n ", "x", system="S"),
    "unicode": conv("Potato \u2014 \u65e5\u672c\u8a9e \U0001F331", "caf\u00e9 \u00fc\u00df \u200bzero-width\u200b"),
    "special_strings": conv("<|im_end|><s>[INST]</s>", "<|eot_id|> <|start_header_id|>x [/INST]", system="<<SYS>> <|im_start|>"),
    "newlines": conv("line1\nline2\n\nline3", "a\r\nb\n"),
}


def random_conversations(n, seed=1234):
    rng = random.Random(seed)
    pieces = ["a", "bc", " ", "  ", "\n", "\t", "\u3000", "\u00a0", "\u00e9", "\U0001F600", "<|im_end|>", "</s>", "[INST]", "x y", "\r\n"]
    out = []
    for _ in range(n):
        turns = rng.randint(1, 6)
        texts = []
        for _ in range(turns):
            t = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            texts.append(t)
        system = None if rng.random() < 0.4 else "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        out.append(conv(*texts, system=system))
    return out


CASES = list(FIXED.items()) + [(f"random{i}", c) for i, c in enumerate(random_conversations(150))]


def _mask_and_text(segments):
    text, mask = "", []
    for seg_text, trained, special, eos in segments:
        assert not eos, "a chat format rendered an eos segment"
        text += seg_text
        mask += [trained] * len(seg_text)
    return text, mask


@pytest.fixture(scope="module")
def rendered():
    keys = [(f, name) for f in FORMATS for name, _ in CASES]
    results = ours([(f, {"messages": c}) for f in FORMATS for _, c in CASES])
    return dict(zip(keys, results))


# ---- a) and b) ----

@pytest.mark.parametrize("fmt", list(FORMATS))
def test_text_and_mask_match_template(fmt, rendered):
    template, bos, eos, untrained_tail = FORMATS[fmt]
    failures = []
    for name, msgs in CASES:
        r = rendered[(fmt, name)]
        if "error" in r:
            # our only refusals of these conversations: empty user/assistant content
            assert any(m["content"] == "" and m["role"] != "system" for m in msgs), f"{name}: {r['error']}"
            continue
        text, mask = _mask_and_text(r["segments"])
        want = jinja(template, msgs, bos, eos)
        if text != want:
            failures.append(f"{name}: text {text!r} != template {want!r}")
            continue
        expect = [False] * len(text)
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            before = jinja(template, msgs[:i], bos, eos, add_generation_prompt=True)
            upto = jinja(template, msgs[:i + 1], bos, eos)
            assert want.startswith(before) and want.startswith(upto)
            end = len(upto) - len(untrained_tail)
            assert upto.endswith(untrained_tail)
            for k in range(len(before), end):
                expect[k] = True
        if mask != expect:
            got = "".join(c for c, t in zip(text, mask) if t)
            exp = "".join(c for c, t in zip(text, expect) if t)
            failures.append(f"{name}: trained {got!r} != {exp!r}")
    assert not failures, "\n".join(failures[:5])


def test_special_segments_are_single_tokens(rendered):
    tokens = {
        "chatml": {"<|im_start|>", "<|im_end|>"},
        "llama2": {"<s>", "</s>"},
        "llama3": {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
    }
    for (fmt, name), r in rendered.items():
        for seg_text, trained, special, _ in r.get("segments", []):
            if special:
                assert seg_text in tokens[fmt], f"{fmt} {name}: special segment {seg_text!r}"


def test_qwen2_template_differs_only_by_default_system():
    """Qwen2's template inserts a default system message when there is none; we do not."""
    cases = [c for _, c in CASES[:40]]
    results = ours([("chatml", {"messages": c}) for c in cases])
    for c, r in zip(cases, results):
        if "error" in r:
            continue
        text, _ = _mask_and_text(r["segments"])
        want = jinja(QWEN2, c)
        if c[0]["role"] == "system":
            assert text == want
        else:
            assert QWEN2_DEFAULT_SYSTEM + text == want


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_prompt_response_is_one_user_and_one_assistant_message(fmt):
    template, bos, eos, _ = FORMATS[fmt]
    pairs = [("Q?", "A."), (" spaced \n", "\n answer "), ("x", "<|im_end|></s>")]
    results = ours([(fmt, {"prompt": p, "response": a, "id": 1}) for p, a in pairs])
    for (p, a), r in zip(pairs, results):
        text, _ = _mask_and_text(r["segments"])
        assert text == jinja(template, conv(p, a), bos, eos)


# ---- c) ----

@pytest.mark.parametrize("msgs", [
    conv("u") + [{"role": "user", "content": "u2"}],
    [{"role": "assistant", "content": "a"}],
    conv("u", "a") + [{"role": "assistant", "content": "a2"}],
    conv(system="s") + [{"role": "assistant", "content": "a"}],
], ids=["user_user", "assistant_first", "assistant_assistant", "system_assistant"])
def test_non_alternating_refused_like_llama2_template(msgs):
    with pytest.raises(TemplateError):
        jinja(LLAMA2, msgs, "<s>", "</s>")
    for r in ours([(f, {"messages": msgs}) for f in FORMATS]):
        assert "error" in r and r["error"].startswith("record: ")
