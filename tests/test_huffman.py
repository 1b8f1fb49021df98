"""Canonical Huffman coding: round trips, optimality, length limit, malformed streams."""

import heapq

import numpy as np
import pytest

from tfcompress.export.huffman import MAX_CODE_LENGTH, HuffmanError, code_lengths, decode, encode


@pytest.mark.parametrize("n", [0, 1, 7, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("alphabet", [1, 2, 17, 300])
def test_round_trip(n, alphabet):
    rng = np.random.default_rng(n + alphabet)
    symbols = rng.integers(0, alphabet, n)
    np.testing.assert_array_equal(decode(encode(symbols, alphabet)), symbols)


def test_round_trip_skewed_large_alphabet_and_small_blocks():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.2, 20_000) - 1, 65536)
    for block in (1, 3, 1024):
        np.testing.assert_array_equal(decode(encode(symbols, 65537, block=block)), symbols)


def test_lengths_are_optimal_huffman():
    rng = np.random.default_rng(1)
    freqs = rng.integers(1, 1000, 50)
    lengths = code_lengths(freqs)
    # Reference cost of an optimal prefix code: sum of merged weights.
    heap = [int(f) for f in freqs]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    assert int(np.sum(lengths * freqs)) == cost
    assert np.sum(2.0**-lengths) <= 1.0


def test_length_limit_holds_for_fibonacci_frequencies():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = code_lengths(np.array(fib))
    assert lengths.max() <= MAX_CODE_LENGTH
    assert np.sum(2.0**-lengths) <= 1.0
    symbols = np.repeat(np.arange(40), 3)
    np.testing.assert_array_equal(decode(encode(symbols)), symbols)


def test_size_is_near_entropy():
    rng = np.random.default_rng(2)
    p = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
    symbols = rng.choice(5, 100_000, p=p)
    data = encode(symbols)
    entropy = -(p * np.log2(p)).sum()
    assert len(data) * 8 / symbols.size < entropy * 1.01 + 0.05


def test_malformed_streams_raise_huffman_error():
    symbols = np.random.default_rng(3).integers(0, 9, 3000)
    data = encode(symbols, block=256)
    for cut in (0, 5, 13, len(data) // 2, len(data) - 1):
        with pytest.raises(HuffmanError):
            decode(data[:cut])
    with pytest.raises(HuffmanError, match="trailing"):
        decode(data + b"\0")
    rng = np.random.default_rng(4)
    for _ in range(300):
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= 1 << rng.integers(8)
        try:
            out = decode(bytes(bad))
        except HuffmanError:
            continue
        assert out.shape == (3000,) or out.size <= 8 * len(bad)


def test_encode_rejects_bad_symbols():
    with pytest.raises(ValueError, match="non-negative"):
        encode(np.array([1, -1]))
    with pytest.raises(ValueError, match="alphabet_size"):
        encode(np.array([5]), alphabet_size=3)
    with pytest.raises(ValueError, match="integers"):
        encode(np.array([0.5]))
