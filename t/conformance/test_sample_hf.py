"""The sampler (lib/sample.c, through t/helpers/llmux-sample) against
transformers' logits processors, and against OpenAI's formulas in numpy.

For random logits (V in 50..1000, float32) and random parameters, the
distribution llm_sample_probs draws from equals the softmax of what
transformers' LogitsProcessorList makes of the same logits:

  a) RepetitionPenaltyLogitsProcessor (input_ids: prompt + output, as
     generate() passes them), TemperatureLogitsWarper, TopKLogitsWarper,
     TopPLogitsWarper, MinPLogitsWarper: generate()'s own order
     (GenerationMixin._get_logits_processor). It gives the same tokens and
     probabilities as our order (sample.h: top-k, softmax, min-p, top-p over
     the top-k probabilities) for every combination, because min-p's cut is
     relative to the top token and both cuts keep a prefix of one sorted
     order. Checked in float64 (the processors are dtype-generic; our
     sampler works in double from the float32 logits, so both start from the
     same numbers and differ only in summation order and our second
     normalisation: a few units of 2^-53; tolerance 1e-12 relative, where a
     penalty applied twice or a wrong cut moves probabilities by percents)
     and in float32, as generate() runs on float32 logits (every value is
     rounded to 2^-24 relative, so a probability moves by about
     2^-24 * 4 * max|logit / T| relative: that bound is the tolerance).
  b) ... TopK, MinP, TopP: min-p before top-p, which is what vLLM does in
     effect (its top-p sees the distribution renormalised after min-p). Equal to ours whenever min-p or top-p is off; when both cut, it
     keeps a subset of our tokens (checked), and a constructed case shows it
     keeping fewer (documented in sample.h).
  c) presence/frequency penalties and logit bias, which transformers does
     not have in OpenAI's form: numpy applies
         logit[id] += bias;  then the repetition penalty (transformers');
         logit[j] -= presence * (count[j] > 0) + frequency * count[j]
     with counts over the output tokens only, then a) as before.
  d) temperature 0: the argmax of the adjusted logits (generate() with
     do_sample=False: the processors, then argmax; the lowest id among
     equals, as torch.argmax).
  e) top logprobs: torch.log_softmax of the raw logits in float64, sorted by
     logprob then id (logits in steps of 1/4 so that ties happen).

Which tokens have nonzero probability must match exactly. Ties and
near-ties at a cutoff are ambiguous (transformers' top-k keeps every token
tied with the k-th, ours exactly k; float32 rounding can move a token across
a min-p or top-p line), so cases are drawn until they have none: the logits
after the penalties are all distinct, the k-th and (k+1)-th differ by more
than 1e-4, and moving min_p by 0.1% or top_p by 1e-4 does not change the
kept set in either order.

The helper: $LLMUX_SAMPLE_BIN, by default ROOT/build/t/llmux-sample.
"""
import json
import os

import numpy as np
import pytest

from common import ROOT, run

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper,  # noqa: E402
                                                    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

BIN = os.environ.get("LLMUX_SAMPLE_BIN") or os.path.join(ROOT, "build", "t", "llmux-sample")
N_HF = 300        # random cases for a), b), d)
N_OPENAI = 200    # random cases for c)
REL64 = 1e-12


@pytest.fixture(scope="module", autouse=True)
def helper():
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"{BIN} is not built (make unit-tests, or set LLMUX_SAMPLE_BIN)")


def ours(reqs):
    """The helper's answers to a list of requests."""
    out = run([BIN], stdin=json.dumps(reqs).encode()).stdout
    got = json.loads(out)
    assert isinstance(got, list) and len(got) == len(reqs)
    return got


def dense(answer, V):
    """(probabilities over the vocabulary, the tokens listed)"""
    p, kept = np.zeros(V), np.zeros(V, dtype=bool)
    ids = [i for i, _ in answer["probs"]]
    assert len(ids) == len(set(ids)), "a token listed twice"
    for i, q in answer["probs"]:
        p[i], kept[i] = q, True
    probs = [q for _, q in answer["probs"]]
    assert all(a >= b for a, b in zip(probs, probs[1:])), "not sorted, most likely first"
    return p, kept


# ---- the reference -------------------------------------------------------

def adjusted(logits, c, dtype=torch.float64):
    """The logits after the logit bias (numpy), transformers' repetition
    penalty, and OpenAI's presence/frequency penalties (numpy), as a (1, V)
    tensor."""
    x = logits.astype(np.float64)
    for tok, b in c.get("logit_bias", {}).items():
        x[int(tok)] += b
    scores = torch.tensor(x, dtype=dtype)[None, :]
    rp = c.get("repetition_penalty", 1.0)
    ids = c["prompt"] + c["output"]
    if rp != 1.0 and ids:
        scores = RepetitionPenaltyLogitsProcessor(penalty=float(rp))(torch.tensor([ids]), scores)
    pres, freq = c.get("presence_penalty", 0.0), c.get("frequency_penalty", 0.0)
    if pres or freq:
        count = np.bincount(np.asarray(c["output"], dtype=np.int64), minlength=len(logits)).astype(np.float64)
        scores = scores - torch.tensor(pres * (count > 0) + freq * count, dtype=dtype)[None, :]
    return scores


def reference(logits, c, order="generate", dtype=torch.float64, top_p=None, min_p=None):
    """transformers' distribution for case c: generate()'s processors in
    `order` ("generate": top-k, top-p, min-p; "renormalised": top-k, min-p,
    top-p), then softmax; temperature 0: one-hot at the argmax."""
    scores = adjusted(logits, c, dtype)
    V = len(logits)
    if c["temperature"] == 0:
        p = np.zeros(V)
        p[int(torch.argmax(scores[0]))] = 1
        return p, p > 0
    top_p = c.get("top_p", 1.0) if top_p is None else top_p
    min_p = c.get("min_p", 0.0) if min_p is None else min_p
    procs = [TemperatureLogitsWarper(float(c["temperature"]))]
    if c.get("top_k", 0):
        procs.append(TopKLogitsWarper(top_k=int(c["top_k"])))
    cut_p = [TopPLogitsWarper(top_p=float(top_p))] if top_p < 1.0 else []
    cut_m = [MinPLogitsWarper(min_p=float(min_p))] if min_p > 0 else []
    procs += cut_p + cut_m if order == "generate" else cut_m + cut_p
    scores = LogitsProcessorList(procs)(torch.zeros((1, 0), dtype=torch.long), scores)
    return torch.softmax(scores, dim=-1)[0].to(torch.float64).numpy(), torch.isfinite(scores[0]).numpy()


def ambiguous(logits, c):
    """Whether a tie or a near-tie at a cutoff makes the kept set depend on
    rounding or tie-breaking."""
    x = adjusted(logits, c)[0].numpy()
    if len(np.unique(x)) != len(x):
        return True
    if c["temperature"] == 0:
        top2 = np.sort(x)[-2:]
        return top2[1] - top2[0] < 1e-4
    k = c.get("top_k", 0)
    if k and k < len(x):
        s = np.sort(x)[::-1]
        if s[k - 1] - s[k] < 1e-4:
            return True
    top_p, min_p = c.get("top_p", 1.0), c.get("min_p", 0.0)
    for order in ("generate", "renormalised"):
        kept = reference(logits, c, order)[1]
        for tp, mp in ((top_p - 1e-4, min_p), (top_p + 1e-4, min_p), (top_p, min_p * 0.999), (top_p, min_p * 1.001)):
            if top_p >= 1.0:
                tp = top_p
            if not np.array_equal(reference(logits, c, order, top_p=tp, min_p=mp)[1], kept):
                return True
    return False


def draw_case(seed, openai=False):
    """A random case without ambiguity: (float32 logits, request without
    the logits)."""
    rng = np.random.default_rng(seed)
    while True:
        V = int(rng.integers(50, 1001))
        logits = (rng.standard_normal(V) * rng.uniform(0.5, 6)).astype(np.float32)
        pool = rng.integers(0, V, size=8)   # the output repeats a few tokens
        c = {"prompt": rng.integers(0, V, size=int(rng.integers(0, 40))).tolist(),
             "output": rng.choice(pool, size=int(rng.integers(0, 30))).tolist(),
             "temperature": 0.0 if rng.random() < 0.1 else float(rng.uniform(0.25, 2.5))}
        u = rng.random()
        if u < 0.3:
            c["top_k"] = int(rng.integers(1, min(V, 60) + 1))
        elif u < 0.5:
            c["top_k"] = int(rng.integers(1, V + 1))
        if rng.random() < 0.6:
            c["top_p"] = float(rng.uniform(0.05, 0.99))
        if rng.random() < 0.5:
            c["min_p"] = float(np.exp(rng.uniform(np.log(1e-3), np.log(0.5))))
        if rng.random() < 0.7:
            c["repetition_penalty"] = float(rng.uniform(0.5, 2.0))
        if openai:
            if rng.random() < 0.7:
                c["presence_penalty"] = float(rng.uniform(-2, 2))
            if rng.random() < 0.7:
                c["frequency_penalty"] = float(rng.uniform(-2, 2))
            if rng.random() < 0.8:
                n = int(rng.integers(1, 12))
                toks = np.concatenate([pool, rng.integers(0, V, size=8)])
                bias = {}
                for t in rng.choice(toks, size=n):
                    b = [-100.0, 100.0, float(rng.uniform(-100, 100)), float(rng.uniform(-5, 5))][int(rng.integers(0, 4))]
                    bias[str(int(t))] = float(np.float32(b))   # ours keeps the bias as a float
                if rng.random() < 0.5:   # no +100: it leaves one token, a dull case
                    bias = {t: b for t, b in bias.items() if b != 100.0}
                c["logit_bias"] = bias
        if not ambiguous(logits, c):
            return logits, c


def request(logits, c):
    return dict(c, logits=[float(v) for v in logits])   # float32 values, exact in a double


def assert_same(got, want, rel, what, tiny=1e-300):
    """got, want: (probabilities, kept) pairs. The kept tokens the same; each
    probability within rel of the reference's, or both below `tiny` (where
    float32 goes subnormal and underflows)."""
    (p, kept), (q, kept_q) = got, want
    support_got, support_want = set(np.nonzero(kept)[0]), set(np.nonzero(kept_q)[0])
    assert support_got == support_want, (
        f"{what}: support differs: ours only {sorted(support_got - support_want)[:10]}, "
        f"reference only {sorted(support_want - support_got)[:10]}")
    big = np.maximum(p, q) >= tiny
    err = np.max(np.abs(p - q)[big] / q[big], initial=0)
    assert err <= rel, f"{what}: relative difference {err:.3g} > {rel:.3g}"


def both_cut(c):
    return c.get("min_p", 0) > 0 and c.get("top_p", 1.0) < 1.0 and c["temperature"] > 0


# ---- the tests -----------------------------------------------------------

@pytest.fixture(scope="module")
def hf_cases():
    cases = [draw_case(seed) for seed in range(N_HF)]
    return cases, ours([request(lg, c) for lg, c in cases])


def test_generate_order_float64(hf_cases):
    cases, answers = hf_cases
    for i, ((lg, c), a) in enumerate(zip(cases, answers)):
        assert_same(dense(a, len(lg)), reference(lg, c), REL64, f"case {i} {c}")


def test_generate_order_float32(hf_cases):
    """What generate() computes on float32 logits, to rounding."""
    cases, answers = hf_cases
    for i, ((lg, c), a) in enumerate(zip(cases, answers)):
        if c["temperature"] == 0:
            continue
        x = adjusted(lg, c)[0].numpy()
        rel = 2.0 ** -24 * 4 * (np.max(np.abs(x)) / c["temperature"] + 1) + 1e-12
        assert_same(dense(a, len(lg)), reference(lg, c, dtype=torch.float32), rel, f"case {i} {c}",
                    tiny=np.finfo(np.float32).tiny)


def test_renormalised_order(hf_cases):
    """[TopK, MinP, TopP] (vLLM's way): the same unless both min-p and top-p
    cut; then a subset of ours."""
    cases, answers = hf_cases
    differ = 0
    for i, ((lg, c), a) in enumerate(zip(cases, answers)):
        got, want = dense(a, len(lg)), reference(lg, c, order="renormalised")
        if not both_cut(c):
            assert_same(got, want, REL64, f"case {i} {c}")
        else:
            assert np.all(got[1][want[1]]), f"case {i}: renormalised keeps a token we drop"
            differ += np.count_nonzero(got[1]) != np.count_nonzero(want[1])
    print(f"{differ} cases with both cuts keep fewer tokens in the renormalised order")


def test_the_orders_differ():
    """A case where min-p and top-p both cut: ours and generate() keep three
    tokens, the renormalised order two."""
    lg = np.array([0, 3, 1, 2, -2, 2.5], dtype=np.float32)
    p = np.exp(lg - lg.max()) / np.exp(lg - lg.max()).sum()
    c = {"prompt": [], "output": [], "temperature": 1.0, "min_p": 0.3, "top_p": float(p[1] + p[5] + 1e-9)}
    (a,) = ours([request(lg, c)])
    got = dense(a, len(lg))
    assert np.count_nonzero(got[1]) == 3
    assert_same(got, reference(lg, c), REL64, "generate order")
    assert np.count_nonzero(reference(lg, c, order="renormalised")[1]) == 2


def test_greedy():
    """temperature 0 among the random cases, and more."""
    cases = [draw_case(10_000 + s) for s in range(100)]
    for lg, c in cases:
        c["temperature"] = 0.0
    cases = [(lg, c) for lg, c in cases if not ambiguous(lg, c)]
    answers = ours([request(lg, c) for lg, c in cases])
    assert len(cases) > 50
    for i, ((lg, c), a) in enumerate(zip(cases, answers)):
        assert len(a["probs"]) == 1 and a["probs"][0][1] == 1.0
        assert_same(dense(a, len(lg)), reference(lg, c), 0, f"greedy case {i} {c}")


def test_openai_penalties_and_bias():
    cases = [draw_case(20_000 + s, openai=True) for s in range(N_OPENAI)]
    answers = ours([request(lg, c) for lg, c in cases])
    for i, ((lg, c), a) in enumerate(zip(cases, answers)):
        assert_same(dense(a, len(lg)), reference(lg, c), REL64, f"case {i} {c}")


def test_penalty_lists():
    """The repetition penalty looks at prompt + output, presence/frequency at
    the output only; an explicit penalty_ids replaces prompt + output."""
    lg = np.array([1.0, 2.0, -1.0, 0.5, 3.0], dtype=np.float32)
    base = {"temperature": 1.0, "repetition_penalty": 2.0, "presence_penalty": 0.5, "frequency_penalty": 0.25}
    c = dict(base, prompt=[1, 2], output=[3, 3, 4])
    want = np.array([1.0, 1.0, -2.0, 0.25 - 0.5 - 0.5, 1.5 - 0.75])
    (a, b) = ours([request(lg, c), dict(request(lg, c), penalty_ids=[0])])
    e = np.exp(want - want.max())
    assert_same(dense(a, 5), (e / e.sum(), e > 0), REL64, "hand-computed")
    want_b = np.array([0.5, 2.0, -1.0, 0.5 - 0.5 - 0.5, 3.0 - 0.75])
    e = np.exp(want_b - want_b.max())
    assert_same(dense(b, 5), (e / e.sum(), e > 0), REL64, "penalty_ids")


def test_top_logprobs():
    rng = np.random.default_rng(7)
    reqs, raw = [], []
    for s in range(60):
        V = int(rng.integers(50, 1001))
        lg = (rng.integers(-40, 41, size=V) / 4).astype(np.float32)   # many ties
        k = int(rng.integers(0, 21)) if s else V + 3
        reqs.append({"logits": [float(v) for v in lg], "top_logprobs": k, "temperature": 0.9, "seed": s,
                     "repetition_penalty": 1.3, "output": [0, 1, 2], "logit_bias": {"3": -50.0}})
        raw.append((lg, k))
    for (lg, k), a in zip(raw, ours(reqs)):
        lp = torch.log_softmax(torch.tensor(lg, dtype=torch.float64), dim=-1).numpy()
        order = np.lexsort((np.arange(len(lg)), -lp))[:k]
        ids = [i for i, _ in a["top_logprobs"]]
        assert ids == order.tolist()
        assert np.max(np.abs(np.array([v for _, v in a["top_logprobs"]]) - lp[order]), initial=0) < 1e-12
        if k >= len(lg):
            assert abs(np.exp([v for _, v in a["top_logprobs"]]).sum() - 1) < 1e-12
        # the draw: in the support, its logprob from the raw distribution (not the processed one)
        support = {i for i, q in a["probs"] if q > 0}
        assert a["token"] in support
        assert abs(a["logprob"] - lp[a["token"]]) < 1e-12


def test_same_seed_same_draw():
    lg, c = draw_case(99, openai=True)
    c = {k: v for k, v in c.items() if k != "logit_bias"}
    c.update(temperature=1.0, top_p=1.0, min_p=0.0, top_k=0)
    reqs = [dict(request(lg, c), seed=s) for s in (1, 1, 2, 3, 4, 5, 6, 7, 8)]
    got = [a["token"] for a in ours(reqs)]
    assert got[0] == got[1]
    assert len(set(got)) > 1
