"""Quantized blocks against the gguf package from PyPI (llama.cpp's own
Python reader and writer of GGUF files, gguf-py):

  a) the bytes our quantizer makes (`llmux-quant TYPE`, llmk_quantize_ref)
     dequantize in gguf.quants.dequantize to exactly the floats our
     dequantizer gives (`llmux-quant -d TYPE`, llmk_dequantize), bit for bit,
     for q8_0, q4_0 and q4_k (Q8_0, Q4_0, Q4_K);
  b) so do arbitrary blocks (random bytes with finite scales), which reach
     codes and scale bits our quantizer never writes (q8_0's -128, any
     6-bit scale and minimum, subnormal and large f16 d);
  c) gguf.quants.quantize gives exactly our bytes where the package
     implements quantization (Q8_0 and Q4_0; it has no Q4_K quantizer, which
     t/unit/test_quant.c checks otherwise).

gguf is imported with pytest.importorskip: without it these tests skip.
"""
import importlib.metadata
import os
import subprocess

import numpy as np
import pytest

from common import ROOT, run

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import quants  # noqa: E402

QUANT = os.path.join(ROOT, "build", "t", "llmux-quant")

# our name -> (gguf type, weights per block, bytes per block)
TYPES = {
    "q8_0": (QT.Q8_0, 32, 34),
    "q4_0": (QT.Q4_0, 32, 18),
    "q4_k": (QT.Q4_K, 256, 144),
}


def ours_quantize(tmp_path, name, x):
    src, dst = tmp_path / "in.f32", tmp_path / "out.bin"
    src.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
    run([QUANT, name, src, dst])
    return np.frombuffer(dst.read_bytes(), dtype=np.uint8)


def ours_dequantize(tmp_path, name, blocks):
    src, dst = tmp_path / "in.bin", tmp_path / "out.f32"
    src.write_bytes(np.ascontiguousarray(blocks, dtype=np.uint8).tobytes())
    run([QUANT, "-d", name, src, dst])
    return np.frombuffer(dst.read_bytes(), dtype="<f4")


def gguf_dequantize(name, blocks):
    qt, _, bb = TYPES[name]
    return quants.dequantize(np.asarray(blocks, dtype=np.uint8).reshape(-1, bb), qt).reshape(-1).astype(np.float32)


def same_bits(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def first_difference(a, b):
    i = int(np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))[0])
    return f"element {i}: ours {a[i]!r} ({a.view(np.uint32)[i]:#010x}), gguf {b[i]!r} ({b.view(np.uint32)[i]:#010x})"


def inputs(name, seed):
    """Rows of floats (whole blocks) that reach the rules' corners: normal and
    uniform data at scales from f16-subnormal d to large, outliers, all-zero
    and constant blocks, one-signed blocks, and exact rounding ties."""
    _, be, _ = TYPES[name]
    rng = np.random.default_rng(seed)
    n = be * 24
    cases = []
    for scale in (2.0 ** -20, 2.0 ** -12, 0.02, 1.0, 300.0):
        cases.append(rng.standard_normal(n) * scale)
        cases.append(rng.uniform(-1, 1, n) * scale)
    heavy = rng.standard_normal(n) * 0.05
    heavy[rng.integers(0, n, n // 50)] *= 40          # outliers, as real weights have
    cases.append(heavy)
    blocks = rng.standard_normal(n)
    blocks[:be] = 0.0                                  # an all-zero block
    blocks[be:2 * be] = 0.75                           # a constant block
    blocks[2 * be:3 * be] = np.abs(blocks[2 * be:3 * be])        # all positive
    blocks[3 * be:4 * be] = -np.abs(blocks[3 * be:4 * be]) - 1   # all negative, away from 0
    cases.append(blocks)
    # ties: with amax 127 (q8_0: d = 1) or max -8 (q4_0: d = 1) the codes are x itself
    ties = rng.integers(-250, 251, n) / 2.0
    ties[::be] = 127.0 if name == "q8_0" else -8.0
    if name == "q4_0":
        ties = np.clip(ties, -7.5, 8.0)               # x/d + 8.5 lands on .0 exactly
    cases.append(ties)
    return np.concatenate(cases).astype(np.float32)


@pytest.mark.parametrize("name", list(TYPES))
def test_our_blocks_dequantize_alike(tmp_path, name):
    x = inputs(name, 1)
    blocks = ours_quantize(tmp_path, name, x)
    _, be, bb = TYPES[name]
    assert blocks.size == x.size // be * bb
    ours = ours_dequantize(tmp_path, name, blocks)
    theirs = gguf_dequantize(name, blocks)
    assert same_bits(ours, theirs), first_difference(ours, theirs)
    # and the round trip is close: no block decoded with the wrong scale
    err = np.abs(ours.astype(np.float64) - x) / (np.abs(x).max() + 1e-30)
    assert err.max() < 0.2


@pytest.mark.parametrize("name", list(TYPES))
def test_arbitrary_blocks_dequantize_alike(tmp_path, name):
    _, _, bb = TYPES[name]
    rng = np.random.default_rng(2)
    nblocks = 2000
    blocks = rng.integers(0, 256, (nblocks, bb), dtype=np.uint8)
    # finite f16 scales of every kind: subnormal, normal, up to +-65504, and zero
    n_scales = 2 if name == "q4_k" else 1
    bits = rng.integers(0, 0x7c00, (nblocks, n_scales), dtype=np.uint16) | (
        rng.integers(0, 2, (nblocks, n_scales), dtype=np.uint16) << 15)
    bits[::97] = 0
    blocks[:, :2 * n_scales] = bits.astype("<u2").view(np.uint8).reshape(nblocks, 2 * n_scales)
    ours = ours_dequantize(tmp_path, name, blocks)
    theirs = gguf_dequantize(name, blocks)
    assert same_bits(ours, theirs), first_difference(ours, theirs)


@pytest.mark.parametrize("name", list(TYPES))
def test_gguf_quantizer_gives_our_bytes(tmp_path, name):
    qt, _, bb = TYPES[name]
    x = inputs(name, 3)
    try:
        theirs = quants.quantize(x.reshape(1, -1), qt).reshape(-1)
    except NotImplementedError:
        pytest.skip(f"gguf {importlib.metadata.version('gguf')} has no {qt.name} quantizer")
    ours = ours_quantize(tmp_path, name, x)
    assert theirs.dtype == np.uint8 and theirs.shape == ours.shape
    if not np.array_equal(ours, theirs):
        i = int(np.flatnonzero(ours != theirs)[0])
        pytest.fail(f"byte {i} (block {i // bb}, offset {i % bb}): ours {ours[i]:#04x}, gguf {theirs[i]:#04x}")


def test_helper_rejects_partial_blocks(tmp_path):
    src = tmp_path / "in.f32"
    src.write_bytes(np.zeros(33, dtype="<f4").tobytes())
    p = subprocess.run([QUANT, "q8_0", str(src), str(tmp_path / "out.bin")], capture_output=True)
    assert p.returncode == 1 and b"whole number" in p.stderr
