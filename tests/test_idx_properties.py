"""Properties of the IDX parser: any bytes give an array or BadInputError; valid arrays round-trip."""

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from halitool.data.idx import encode_idx, parse_idx
from halitool.errors import BadInputError


def parse_or_bad_input(data: bytes):
    try:
        return parse_idx(data, "fuzz")
    except BadInputError as exc:
        assert str(exc).startswith("fuzz: ")
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    parse_or_bad_input(data)


@st.composite
def idx_like(draw):
    """Bytes that start like an IDX header (so the parser gets past the magic) with a random body length."""
    ndim = draw(st.integers(0, 4))
    dims = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    header = bytes([0, 0, draw(st.sampled_from([0x08, 0x08, 0x09, 0x0D])), ndim]) + struct.pack(f">{ndim}I", *dims)
    cut = draw(st.integers(0, len(header)))
    body = draw(st.binary(max_size=300))
    return header[: cut if draw(st.booleans()) else len(header)] + body


@settings(max_examples=300, deadline=None)
@given(idx_like())
def test_idx_like_bytes(data):
    array = parse_or_bad_input(data)
    if array is not None:
        assert array.dtype == np.uint8
        assert encode_idx(array) == data  # what parses is exactly what it encodes


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4).flatmap(lambda nd: arrays(np.uint8, st.lists(st.integers(0, 5), min_size=nd, max_size=nd))))
def test_round_trip(array):
    parsed = parse_idx(encode_idx(array))
    assert parsed.shape == array.shape and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, array)


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(1, 4))), st.data())
def test_any_truncation_is_bad_input(array, data):
    encoded = encode_idx(array)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    assert parse_or_bad_input(encoded[:cut]) is None
