"""nf4 (bitsandbytes' 4-bit NormalFloat with double quantization) against
bitsandbytes' formulas written out again here in numpy, from the published
NF4 code and bitsandbytes' create_dynamic_map:

  a) the tables: the 16 NF4 values and the 256 values of the dynamic map
     that our dequantizer uses (read back through crafted tensors) are the
     published code and create_dynamic_map(signed=True) as torch computes it
     (and, where torch runs its unvectorized kernels, within 1 ulp);
  b) our dequantized floats (`llmux-quant -d nf4`, llmk_dequantize) equal
     the formula bit for bit: absmax = map[code] * scale + offset, then
     weight = NF4[nibble] * absmax, each rounded to float32, the high nibble
     first; on our quantizer's bytes and on random valid bytes;
  c) our quantizer (`llmux-quant nf4`, llmk_quantize_ref) writes the codes of
     bitsandbytes' CUDA kernels: the NF4 thresholds of dQuantizeNF4 on
     w * (1 / absmax), the mean absmax as offset, each group's largest
     |absmax - offset| as scale, and the nearest map value by the kernel's
     binary search (dQuantize) -- and they are the nearest codes;
  d) where the bitsandbytes package imports (its CPU build runs without a
     GPU), its dequantize_4bit gives our floats bit for bit on our bytes, and
     its quantize_4bit agrees with ours but for the documented differences
     (nearest absmax codes where its CPU search is off by one; the offset,
     a float32 mean, within an ulp).

LLMUX_QUANT names the helper (default build/t/llmux-quant).
"""
import os
from fractions import Fraction

import numpy as np
import pytest

from common import ROOT, run

QUANT = os.environ.get("LLMUX_QUANT") or os.path.join(ROOT, "build", "t", "llmux-quant")
f32 = np.float32

# bitsandbytes' get_4bit_type("nf4") (QLoRA's NF4), as published
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
# the decision tree of dQuantizeNF4 (csrc/kernels.cu), its thresholds in
# order: float literals ("0.8614784181118011f"), which a C or CUDA compiler
# rounds from the decimal to float directly (see THRESHOLDS below: through a
# double, 4 of them would round the other way)
THRESHOLD_LITERALS = [
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"]


def round_f32(q):
    """A Fraction rounded to the nearest float32, ties to even."""
    c = f32(float(q))
    best = None
    for v in (np.nextafter(c, f32(-np.inf)), c, np.nextafter(c, f32(np.inf))):
        d = abs(Fraction(float(v)) - q)
        if best is None or d < best[0] or (d == best[0] and int(v.view(np.uint32)) % 2 == 0):
            best = (d, v)
    return best[1]


def dynamic_map(fused=True):
    """create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as
    bitsandbytes writes it, with torch.linspace's float32 arithmetic spelled
    out: start + step * k below the middle, end - step * (steps - 1 - k) from
    it, in one rounding (torch's AVX2 / AVX-512 kernels: an FMA) or two."""
    data = []
    non_sign_bits = 7
    for i in range(7):
        steps = 2 ** (i + non_sign_bits - 7) + 1
        start, end = f32(0.1), f32(1.0)
        step = f32((end - start) / f32(steps - 1))
        half = steps // 2
        b = []
        for k in range(steps):
            if fused:
                exact = (Fraction(float(start)) + Fraction(float(step)) * k if k < half
                         else Fraction(float(end)) - Fraction(float(step)) * (steps - 1 - k))
                b.append(round_f32(exact))
            else:
                b.append(f32(start + f32(step * f32(k))) if k < half else f32(end - f32(step * f32(steps - 1 - k))))
        b = np.array(b, dtype=np.float32)
        means = ((b[:-1] + b[1:]) / f32(2.0)).astype(np.float32)
        scale = f32(10 ** (-(7 - 1) + i))
        data += list(scale * means)
        data += list(-scale * means)
    data += [f32(0), f32(1.0)]
    return np.sort(np.array(data, dtype=np.float32))


MAP = dynamic_map()
THRESHOLDS = np.array([round_f32(Fraction(t)) for t in THRESHOLD_LITERALS], dtype=np.float32)


# ---- the helper ----

def ours_quantize(tmp_path, x):
    src, dst = tmp_path / "in.f32", tmp_path / "out.bin"
    src.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
    run([QUANT, "nf4", src, dst])
    return np.frombuffer(dst.read_bytes(), dtype=np.uint8)


def ours_dequantize(tmp_path, blob):
    src, dst = tmp_path / "in.bin", tmp_path / "out.f32"
    src.write_bytes(np.ascontiguousarray(blob, dtype=np.uint8).tobytes())
    run([QUANT, "-d", "nf4", src, dst])
    return np.frombuffer(dst.read_bytes(), dtype="<f4")


@pytest.fixture(autouse=True)
def _helper_built():
    if not os.access(QUANT, os.X_OK):
        pytest.fail(f"{QUANT} is not built (make unit-tests, or set LLMUX_QUANT)")


# ---- the layout, read independently ----

def sections(blob, n):
    nb = n // 64
    ng = -(-nb // 256)
    assert blob.size == n // 2 + nb + 4 * ng + 4
    codes = blob[:n // 2]
    acodes = blob[n // 2:n // 2 + nb]
    scales = np.frombuffer(blob[n // 2 + nb:n // 2 + nb + 4 * ng].tobytes(), dtype="<f4")
    offset = np.frombuffer(blob[n // 2 + nb + 4 * ng:].tobytes(), dtype="<f4")[0]
    return codes, acodes, scales, offset


def pack(codes, acodes, scales, offset):
    return np.concatenate([codes, acodes, np.asarray(scales, dtype="<f4").view(np.uint8),
                           np.asarray([offset], dtype="<f4").view(np.uint8)]).astype(np.uint8)


def dequantize_formula(blob, n):
    codes, acodes, scales, offset = sections(blob, n)
    nb = n // 64
    absmax = (MAP[acodes] * np.repeat(scales, 256)[:nb]).astype(np.float32) + offset   # two roundings
    idx = np.empty(n, dtype=np.int64)
    idx[0::2] = codes >> 4      # the first weight of a pair in the high nibble
    idx[1::2] = codes & 15
    return (NF4[idx] * np.repeat(absmax.astype(np.float32), 64)).astype(np.float32)


def same_bits(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def first_difference(a, b):
    i = int(np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))[0])
    return f"element {i}: ours {a[i]!r} ({a.view(np.uint32)[i]:#010x}), expected {b[i]!r} ({b.view(np.uint32)[i]:#010x})"


# ---- the rounding rules, from bitsandbytes' kernels ----

def nf4_codes(s):
    """dQuantizeNF4: how many thresholds s exceeds (NaN: none)."""
    return np.searchsorted(THRESHOLDS, s, side="left").astype(np.uint8) * ~np.isnan(s)


def map_codes(x):
    """dQuantize<0> over the map: 7 levels of binary search from 127, then
    the float midpoint with the neighbour on x's side."""
    x = np.asarray(x, dtype=np.float32)
    pivot = np.full(x.shape, 127)
    up, lo = np.full(x.shape, 255), np.zeros(x.shape, dtype=np.int64)
    upper, lower = np.full(x.shape, f32(1.0)), np.full(x.shape, f32(-1.0))
    val = MAP[pivot]
    i = 64
    while i > 0:
        gt = x > val
        lo, lower = np.where(gt, pivot, lo), np.where(gt, val, lower)
        up, upper = np.where(gt, up, pivot), np.where(gt, upper, val)
        pivot = np.where(gt, pivot + i, pivot - i)
        val = MAP[pivot]
        i >>= 1
    upper = np.where(up == 255, MAP[255], upper).astype(np.float32)
    lower = np.where(lo == 0, MAP[0], lower).astype(np.float32)
    mid_up = ((upper + val) * f32(0.5)).astype(np.float32)
    mid_lo = ((lower + val) * f32(0.5)).astype(np.float32)
    return np.where(x > val, np.where(x > mid_up, up, pivot), np.where(x < mid_lo, lo, pivot)).astype(np.uint8)


def block_absmax(x):
    return np.abs(x.reshape(-1, 64)).max(axis=1).astype(np.float32)


def inputs(seed):
    """Weights of whole blocks, 600+ blocks (not a multiple of 256): normal
    and uniform data at many scales, outliers, all-zero and constant blocks,
    one-signed blocks, and weights exactly at the NF4 thresholds."""
    rng = np.random.default_rng(seed)
    n = 64 * 48
    cases = []
    for scale in (2.0 ** -20, 2.0 ** -12, 0.02, 1.0, 300.0):
        cases.append(rng.standard_normal(n) * scale)
        cases.append(rng.uniform(-1, 1, n) * scale)
    heavy = rng.standard_normal(n) * 0.05
    heavy[rng.integers(0, n, n // 50)] *= 40
    cases.append(heavy)
    blocks = rng.standard_normal(n)
    blocks[:64] = 0.0                                  # an all-zero block
    blocks[64:128] = 0.75                              # a constant block
    blocks[128:192] = np.abs(blocks[128:192])          # all positive
    blocks[192:256] = -np.abs(blocks[192:256]) - 1     # all negative, away from 0
    cases.append(blocks)
    ties = rng.choice(np.concatenate([THRESHOLDS, NF4]), n).astype(np.float32)   # absmax 1: s = w exactly
    ties[::64] = 1.0
    cases.append(ties)
    return np.concatenate(cases).astype(np.float32)


# ---- a) the tables ----

def test_codebook_and_map(tmp_path):
    # 16 weights with codes 0..15 in a block of absmax 1 (scale 0, offset 1)
    n = 64
    codes = np.array([(2 * k % 16) << 4 | (2 * k + 1) % 16 for k in range(32)], dtype=np.uint8)
    got = ours_dequantize(tmp_path, pack(codes, [0], [0.0], 1.0))
    want = np.array([NF4[j % 16] for j in range(n)], dtype=np.float32)
    assert same_bits(got, want), first_difference(got, want)
    # 256 blocks of code 15 (1.0) whose absmax are map[0..255] (scale 1, offset 0)
    n = 64 * 256
    got = ours_dequantize(tmp_path, pack(np.full(n // 2, 0xff, dtype=np.uint8), np.arange(256), [1.0], 0.0))
    ours_map = got.reshape(256, 64)[:, 0]
    assert same_bits(ours_map, MAP), first_difference(ours_map, MAP)
    assert np.all(np.diff(MAP) > 0) and MAP[127] == 0 and MAP[255] == 1
    # unfused torch arithmetic moves 42 values by an ulp or two, no more
    unfused = dynamic_map(fused=False)
    ulps = np.abs(unfused.view(np.int32).astype(np.int64) - MAP.view(np.int32).astype(np.int64))
    assert np.count_nonzero(ulps) == 42 and ulps.max() == 2
    # the thresholds are the midpoints of neighbouring NF4 values within half an ulp
    mids = (NF4[:-1].astype(np.float64) + NF4[1:]) / 2
    assert np.all(np.abs(THRESHOLDS - mids) <= np.abs(np.spacing(THRESHOLDS)) / 2)
    assert np.count_nonzero(THRESHOLDS != np.array([float(t) for t in THRESHOLD_LITERALS], dtype=np.float32)) == 4


def test_map_is_torchs():
    torch = pytest.importorskip("torch")

    # bitsandbytes.functional.create_dynamic_map, as it reads
    def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
        data = []
        non_sign_bits = total_bits - 1
        additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
        for i in range(max_exponent_bits):
            fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                                 else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
            boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
            means = (boundaries[:-1] + boundaries[1:]) / 2.0
            data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
            if signed:
                data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        assert additional_items == 0
        data.append(0)
        data.append(1.0)
        data.sort()
        return torch.tensor(data, dtype=torch.float32)

    theirs = create_dynamic_map().numpy()
    cap = torch.backends.cpu.get_cpu_capability()
    if cap in ("AVX2", "AVX512"):
        assert same_bits(theirs, MAP), first_difference(theirs, MAP)
    else:   # unvectorized kernels: two roundings in linspace
        assert np.all(np.abs(theirs.astype(np.float64) - MAP) <= 2 * np.spacing(np.abs(MAP)))


# ---- b) dequantization ----

@pytest.mark.parametrize("seed", [1, 2])
def test_our_bytes_dequantize_as_the_formula(tmp_path, seed):
    x = inputs(seed)
    blob = ours_quantize(tmp_path, x)
    ours = ours_dequantize(tmp_path, blob)
    want = dequantize_formula(blob, x.size)
    assert same_bits(ours, want), first_difference(ours, want)
    # the round trip is close: no block decoded with another's absmax
    err = np.abs(ours.astype(np.float64) - x).reshape(-1, 64).max(axis=1)
    assert np.all(err <= 0.16 * block_absmax(x) + 1e-30 + 0.01 * sections(blob, x.size)[2].max())


def test_random_bytes_dequantize_as_the_formula(tmp_path):
    rng = np.random.default_rng(3)
    for nb in (1, 255, 256, 700):
        n = 64 * nb
        ng = -(-nb // 256)
        scales = (rng.uniform(0.5, 2, ng) * 2.0 ** rng.integers(-30, 10, ng)).astype(np.float32)
        scales[rng.integers(0, ng)] = 0.0 if nb > 300 else scales[0]
        offset = f32(rng.uniform(-2, 2) * 2.0 ** rng.integers(-20, 5))
        blob = pack(rng.integers(0, 256, n // 2, dtype=np.uint8), rng.integers(0, 256, nb, dtype=np.uint8),
                    scales, offset)
        ours = ours_dequantize(tmp_path, blob)
        want = dequantize_formula(blob, n)
        assert same_bits(ours, want), first_difference(ours, want)


# ---- c) quantization ----

@pytest.mark.parametrize("seed", [1, 2])
def test_quantizer_codes(tmp_path, seed):
    x = inputs(seed)
    n, nb = x.size, x.size // 64
    blob = ours_quantize(tmp_path, x)
    codes, acodes, scales, offset = sections(blob, n)
    absmax = block_absmax(x)
    # the weights' codes: thresholds on w * (1 / absmax); an all-zero block 0.0's code
    inv = np.where(absmax > 0, f32(1) / np.where(absmax > 0, absmax, 1), 0).astype(np.float32)
    s = (x * np.repeat(inv, 64)).astype(np.float32)
    want = nf4_codes(s)
    assert np.array_equal(codes >> 4, want[0::2]) and np.array_equal(codes & 15, want[1::2])
    # ... which are the nearest NF4 values (within the thresholds' float rounding)
    got = NF4[want].astype(np.float64)
    nearest = np.abs(s[:, None].astype(np.float64) - NF4[None, :]).min(axis=1)
    assert np.all(np.abs(s - got) <= nearest + 1e-7)
    # the offset: the mean absmax (float32 of the exact mean, within an ulp)
    mean = Fraction(sum(Fraction(float(a)) for a in absmax)) / nb
    assert abs(Fraction(float(offset)) - mean) <= Fraction(float(np.spacing(f32(float(mean)))))
    # scales and absmax codes from that offset
    d = (absmax - offset).astype(np.float32)
    pad = -nb % 256
    dg = np.concatenate([d, np.zeros(pad, dtype=np.float32)]).reshape(-1, 256)
    want_scales = np.abs(dg).max(axis=1).astype(np.float32)
    assert same_bits(scales, want_scales), first_difference(scales, want_scales)
    inv2 = np.where(want_scales > 0, f32(1) / np.where(want_scales > 0, want_scales, 1), 0).astype(np.float32)
    xq = (d * np.repeat(inv2, 256)[:nb]).astype(np.float32)
    assert np.array_equal(acodes, map_codes(xq))
    near = np.abs(xq[:, None].astype(np.float64) - MAP[None, :]).min(axis=1)
    assert np.all(np.abs(xq - MAP[acodes].astype(np.float64)) <= near + 1e-7 * np.abs(xq))
    # an all-zero block decodes to zeros
    back = ours_dequantize(tmp_path, blob)
    zero = absmax == 0
    assert zero.any() and np.all(back.reshape(-1, 64)[zero] == 0)


# ---- d) the bitsandbytes package, where it imports ----

def bnb_or_skip():
    torch = pytest.importorskip("torch")
    try:
        import bitsandbytes.functional as F
    except Exception as e:   # not installed, or no native library for this machine
        pytest.skip(f"bitsandbytes does not import: {e}")
    return torch, F


@pytest.mark.parametrize("seed", [1, 4])
def test_bitsandbytes_dequantizes_our_bytes(tmp_path, seed):
    torch, F = bnb_or_skip()
    x = inputs(seed)
    n = x.size
    blob = ours_quantize(tmp_path, x)
    codes, acodes, scales, offset = sections(blob, n)
    code2 = F.create_dynamic_map(signed=True)
    assert same_bits(code2.numpy(), MAP) or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512")
    state2 = F.QuantState(absmax=torch.tensor(scales.copy()), code=torch.tensor(MAP), blocksize=256, dtype=torch.float32)
    state = F.QuantState(absmax=torch.tensor(acodes.copy()), shape=torch.Size([n]), dtype=torch.float32, blocksize=64,
                         code=F.get_4bit_type("nf4", device="cpu"), quant_type="nf4",
                         offset=torch.tensor(offset), state2=state2)
    theirs = F.dequantize_4bit(torch.tensor(codes.copy()).view(-1, 1), state).numpy().reshape(-1)
    ours = ours_dequantize(tmp_path, blob)
    assert same_bits(ours, theirs), first_difference(ours, theirs)


@pytest.mark.parametrize("seed", [1, 5])
def test_bitsandbytes_quantizes_alike(tmp_path, seed):
    torch, F = bnb_or_skip()
    x = inputs(seed)
    x = x[np.repeat(block_absmax(x) > 0, 64)]   # bitsandbytes codes an all-zero block as -1: see nf4_ref.c
    n, nb = x.size, x.size // 64
    blob = ours_quantize(tmp_path, x)
    codes, acodes, scales, offset = sections(blob, n)
    q, st = F.quantize_4bit(torch.tensor(x), blocksize=64, compress_statistics=True, quant_type="nf4")
    # weights' codes: the same, but where s lies within float rounding of a threshold
    theirs = q.numpy().reshape(-1)
    s = (x * np.repeat(f32(1) / block_absmax(x), 64)).astype(np.float32)
    near_threshold = (np.abs(s[:, None] - THRESHOLDS[None, :]) <= 4 * np.spacing(np.abs(THRESHOLDS))).any(axis=1)
    differ = np.concatenate([(theirs >> 4 != codes >> 4)[:, None], (theirs & 15 != codes & 15)[:, None]], axis=1)
    assert not np.any(differ.reshape(-1) & ~near_threshold)
    # the offset: torch's float32 mean, within an ulp of ours
    assert abs(float(st.offset) - float(offset)) <= float(np.spacing(offset))
    # absmax codes: the same, or ours the nearer (their CPU search can land one off)
    ta = st.absmax.numpy()
    d = (block_absmax(x) - offset).astype(np.float32)
    xq = (d * np.repeat(f32(1) / scales, 256)[:nb]).astype(np.float32)
    diff = np.flatnonzero(ta != acodes)
    assert diff.size <= nb // 50
    assert np.all(np.abs(xq[diff] - MAP[acodes[diff]]) <= np.abs(xq[diff] - MAP[ta[diff]]))
    assert np.all(np.abs(ta[diff].astype(int) - acodes[diff]) == 1)
