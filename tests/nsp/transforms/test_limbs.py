"""nsp.transforms.limbs: exact integers as int64 limbs, against Python's integers and fractions."""

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.transforms.limbs import (
    add_limbs,
    decompose,
    fit,
    float32_scale,
    float_limbs,
    from_limbs,
    general_scale,
    normalize,
    small_scale,
    split_int64,
    to_limbs,
)

floats = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True, width=64)
widths = st.integers(8, 32)


def value_of(limbs: np.ndarray, b: int) -> list[int]:
    """The integers that limbs ``(k, ...)`` hold, flattened over the other axes."""
    flat = limbs.reshape(limbs.shape[0], -1)
    return [sum(int(flat[j, i]) << (j * b) for j in range(flat.shape[0])) for i in range(flat.shape[1])]


def limbs_of(values: list[int], b: int, k: int) -> np.ndarray:
    """Normalised limbs ``(k, len(values))``: limbs below the top in [0, 2^b), the top signed."""
    mask = (1 << b) - 1
    return np.array([[(v >> (j * b)) & mask if j < k - 1 else v >> (j * b) for v in values] for j in range(k)],
                    dtype=np.int64)


def rounded(value: int, exponent: int) -> float:
    """``value · 2^exponent`` correctly rounded to float64 (±inf past its range)."""
    try:
        return float(Fraction(value) * Fraction(2) ** exponent)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


@st.composite
def hard_integers(draw: st.DrawFn, b: int) -> int:
    """Integers where rounding and carries are hard: ties and near-ties at every depth below
    the 53-bit mantissa, values next to a limb boundary or a power of two (the int64 range
    of the fast path), and wide random values; either sign."""
    kind = draw(st.sampled_from(["tie", "limb", "power", "random"]))
    if kind == "tie":
        # m · 2^s + 2^(s-1) is halfway between two floats; ± a bit far below it is the sticky bit.
        m = draw(st.integers(1 << 52, (1 << 53) - 1))
        s = draw(st.integers(1, 300))
        sticky = draw(st.sampled_from([0, 1, -1, 1 << max(0, s - 60), -(1 << max(0, s - 60))]))
        value = (m << s) + (1 << (s - 1)) + (sticky if abs(sticky) < 1 << (s - 1) else 0)
    elif kind == "limb":
        value = (1 << (b * draw(st.integers(1, 12)))) + draw(st.integers(-3, 3))
    elif kind == "power":
        value = (1 << draw(st.integers(0, 400))) + draw(st.integers(-3, 3))
    else:
        value = draw(st.integers(0, 1 << 400))
    return value if draw(st.booleans()) else -value


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_from_limbs_rounds_correctly_at_ties_carries_and_limb_boundaries(data):
    b = data.draw(widths)
    probes = 2
    values = [data.draw(st.lists(hard_integers(b), min_size=1, max_size=4)) for _ in range(probes)]
    n = max(len(v) for v in values)
    values = [v + [0] * (n - len(v)) for v in values]
    # emin >= -1074 as general_scale gives it: every result with more than 53 bits is normal.
    emin = np.array([data.draw(st.integers(-1074, 1000)) for _ in range(probes)])
    bits = max(abs(v).bit_length() for row in values for v in row)
    k = max(1, -(-(bits + 1) // b)) + data.draw(st.integers(0, 3))
    limbs = limbs_of([v for row in values for v in row], b, k).reshape(k, probes, n)
    with np.errstate(over="ignore"):
        got = from_limbs(limbs, b, emin)
    want = np.array([[rounded(v, int(e)) for v in row] for row, e in zip(values, emin)])
    np.testing.assert_array_equal(got, want)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_from_limbs_rounds_few_limbs_correctly(data):
    # Few limbs (b·(k-1) <= 100, the transform's usual case) take from_limbs's per-value cut
    # (_round_shifted): ties, near-ties and limb boundaries up to the top limb's width, either
    # sign, beside values of every smaller size (each value is cut at its own bit).
    b = data.draw(widths)
    k = data.draw(st.integers(1, 100 // b + 1))
    top = b * (k - 1) + min(b, 62 - b) - 2 if k > 1 else 61
    hard = hard_integers(b).filter(lambda v: abs(v).bit_length() <= top)
    any_size = st.integers(1, top).flatmap(lambda n: st.integers(-(1 << n) + 1, (1 << n) - 1))
    kinds = [hard, any_size]
    if top > 54:
        # Halfway between two floats, ± a bit far below: only the sticky bit tells them apart.
        tie = st.tuples(st.integers(1 << 52, (1 << 53) - 1), st.integers(1, top - 54), st.sampled_from([0, 1, -1]),
                        st.booleans())
        kinds.append(tie.map(lambda t: ((t[0] << t[1]) + (1 << (t[1] - 1)) + t[2] * (t[1] > 1)) * (-1) ** t[3]))
    values = data.draw(st.lists(st.one_of(kinds), min_size=2, max_size=8))
    emin = data.draw(st.integers(-1074, 900))
    limbs = limbs_of(values, b, k)[:, None, :]
    with np.errstate(over="ignore"):
        got = from_limbs(limbs, b, np.array([emin]))[0]
    np.testing.assert_array_equal(got, [rounded(v, emin) for v in values])


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_from_limbs_rounds_three_limbs_or_more_by_one_addition(data):
    # Three limbs or more take from_limbs's single float64 addition (_round_two_doubles):
    # V = A·2^(b(k-2)) + R, with R cut below its top two limbs: their low c bits and every
    # limb below them folded into a sticky bit (c = 2b-53 for wide limbs, 1 for narrow ones
    # with limbs below). Ties and near-ties whose deciding bit lies anywhere below the 53-bit
    # mantissa (below the cut too, down to the lowest limb), and top parts A next to the
    # bounds of that path (|A| = 2^(c+54-2b) + 1, 2^53), either sign; the top limb stays
    # below 2^(61-b), as fitted limbs keep it.
    b = data.draw(st.integers(12, 32))
    k = data.draw(st.integers(3, 8))
    top = b * (k - 1) + 60 - b
    step = 1 << (b * (k - 2))
    cut = 0 if k == 3 else max(1 if k > 4 else 0, 2 * b - 53)
    floor = (1 << (cut + 54 - 2 * b)) + 1 if cut else 3
    tie = st.tuples(st.integers(1 << 52, (1 << 53) - 1), st.integers(1, top - 54),
                    st.sampled_from([0, 1, -1, 2, -2])).map(
        lambda t: (t[0] << t[1]) + (1 << (t[1] - 1)) + t[2] * (t[1] > 2))
    edge = st.tuples(st.sampled_from([0, 1, 2, floor - 1, floor, floor + 1, (1 << 53) - 1, 1 << 53]),
                     st.integers(0, step - 1)).map(lambda t: t[0] * step + t[1])
    small = st.integers(0, (1 << top) - 1)
    magnitudes = st.lists(st.one_of(tie, edge, small), min_size=2, max_size=8)
    values = [v * data.draw(st.sampled_from([1, -1])) for v in data.draw(magnitudes)]
    # Signed top parts at the bounds, with R's bit c clear and bits below it set: a sticky
    # bit that a 54-bit intermediate would take for a tie.
    bounds = [sign * a for a in (floor - 1, floor, floor + 1, (1 << 53) - 1) for sign in (1, -1)]
    near = st.tuples(st.sampled_from(bounds), st.integers(0, max(0, (step >> (cut + 1)) - 1)),
                     st.integers(1, max(1, (1 << cut) - 1))).map(lambda t: t[0] * step + (t[1] << (cut + 1)) + t[2])
    values += data.draw(st.lists(near, max_size=4))
    emin = data.draw(st.integers(-999, 899))
    limbs = limbs_of(values, b, k)[:, None, :]
    with np.errstate(over="ignore"):
        got = from_limbs(limbs, b, np.array([emin]))[0]
    np.testing.assert_array_equal(got, [rounded(v, emin) for v in values])
    # Two probes written into a view of a wider array (the transform's output), as the
    # transform rounds a layer in place: the values that leave the one-addition path too.
    other = data.draw(st.integers(-999, 899))
    wide = np.full((2, len(values) + 3), 7.0)
    limbs = np.stack([limbs_of(values, b, k), limbs_of(values[::-1], b, k)], axis=1)
    with np.errstate(over="ignore"):
        from_limbs(limbs, b, np.array([emin, other]), out=wide[:, 1:-2])
    np.testing.assert_array_equal(wide[0, 1:-2], [rounded(v, emin) for v in values])
    np.testing.assert_array_equal(wide[1, 1:-2], [rounded(v, other) for v in values[::-1]])
    assert (wide[:, 0] == 7.0).all() and (wide[:, -2:] == 7.0).all()


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**300), 2**300), st.integers(-200, 200), st.sampled_from([16, 24, 32]))
def test_from_limbs_rounds_correctly(value, exponent, b):
    k = 300 // b + 3
    limbs = np.array([[[(abs(value) >> (i * b)) & ((1 << b) - 1)]] for i in range(k)], dtype=np.int64)
    if value < 0:
        limbs = -limbs
    normalize(limbs, b)
    got = from_limbs(limbs, b, np.array([exponent]))[0, 0]
    assert got == float(Fraction(value) * Fraction(2) ** exponent)


@settings(max_examples=300, deadline=None)
@given(widths, st.integers(1, 6), st.data())
def test_normalize_propagates_carries_and_keeps_the_value(b, k, data):
    # Pending sums of limbs stay below 2^62 in magnitude (the limb width is chosen so).
    bound = (1 << 62) - 1
    limb = st.one_of(st.integers(-bound, bound), st.sampled_from([0, -1, (1 << b) - 1, 1 << b, -(1 << b), bound, -bound]))
    x = np.array(data.draw(st.lists(st.lists(limb, min_size=3, max_size=3), min_size=k, max_size=k)), dtype=np.int64)
    before = value_of(x, b)
    normalize(x, b)
    assert value_of(x, b) == before
    assert ((x[:-1] >= 0) & (x[:-1] < 1 << b)).all()
    assert ((x[-1] < 0) == (np.array(before) < 0)).all()


@settings(max_examples=300, deadline=None)
@given(widths, st.integers(1, 6), st.data())
def test_fit_keeps_the_value_in_the_fewest_limbs_whose_top_is_in_range(b, k, data):
    # After a carry pass the top limb may be anything up to 2^62 (a sum that outgrew the
    # limb count the pass chose), or only the sign of the limb below it (more limbs than
    # the values need): the values at the range's edges 2^(k'·b - 3) are the hard ones.
    edge = st.integers(1, 8).flatmap(lambda n: st.sampled_from([1 << (n * b - 3), (1 << (n * b - 3)) - 1]))
    top = 1 << (b * (k - 1) + 61)
    value = st.one_of(st.integers(-top, top - 1), edge, edge.map(lambda v: -v), st.sampled_from([0, -1, 1]))
    values = data.draw(st.lists(value.filter(lambda v: -top <= v < top), min_size=1, max_size=6))
    x = limbs_of(values, b, k)
    got = fit(x, b)
    assert value_of(got, b) == values
    bound = 1 << (b - 3)
    assert ((got[:-1] >= 0) & (got[:-1] < 1 << b)).all() and ((got[-1] >= -bound) & (got[-1] < bound)).all()
    # Fewest: one limb less could not hold the largest value so.
    n = got.shape[0]
    assert n == 1 or any(not -(1 << ((n - 1) * b - 3)) <= v < 1 << ((n - 1) * b - 3) for v in values)


@settings(max_examples=200, deadline=None)
@given(widths, st.data())
def test_add_limbs_of_different_limb_counts_is_the_exact_sum(b, data):
    ka, kb = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    # Normalised operands: every limb sum stays far from int64 overflow.
    ints = st.integers(-(1 << (b * min(ka, kb) - 1)), (1 << (b * min(ka, kb) - 1)) - 1)
    a_values, b_values = data.draw(st.lists(ints, min_size=4, max_size=4)), data.draw(st.lists(ints, min_size=4, max_size=4))
    a, other = limbs_of(a_values, b, ka).reshape(ka, 2, 2), limbs_of(b_values, b, kb).reshape(kb, 2, 2)
    a_copy, other_copy = a.copy(), other.copy()
    total = add_limbs(a, other)
    assert total.shape == (max(ka, kb), 2, 2)
    assert value_of(total, b) == [x + y for x, y in zip(a_values, b_values)]
    np.testing.assert_array_equal(a, a_copy)
    np.testing.assert_array_equal(other, other_copy)


@settings(max_examples=300, deadline=None)
@given(st.lists(floats, min_size=1, max_size=12))
def test_decompose_gives_the_exact_mantissa_exponent_and_sign(values):
    m, e, negative = decompose(np.array(values))
    for v, mi, ei, ni in zip(values, m, e, negative):
        assert 0 <= int(mi) < 1 << 53
        assert Fraction(int(mi)) * Fraction(2) ** int(ei) == abs(Fraction(v))
        assert bool(ni) == bool(np.signbit(v))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(floats, min_size=3, max_size=3), min_size=1, max_size=3))
def test_general_scale_makes_every_value_an_integer_with_the_largest_exponent(rows):
    x = np.array(rows)
    emin, bits = general_scale([x[:, :1], x[:, 1:]])
    for row, e in zip(rows, emin):
        scaled = [Fraction(v) / Fraction(2) ** int(e) for v in row]
        assert all(s.denominator == 1 for s in scaled)
        assert all(abs(s) < Fraction(2) ** bits for s in scaled)
        if any(scaled):
            # The largest such exponent: some value is odd at this scale.
            assert any(s.numerator % 2 for s in scaled)
        else:
            assert e == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(floats, min_size=1, max_size=12), st.sampled_from([8, 16, 31, 32]))
def test_limbs_hold_floats_exactly_and_round_back(values, b):
    x = np.array([values])
    # Split into two "layers": the scale is common to all of them.
    emin, bits = general_scale([x[:, : len(values) // 2], x[:, len(values) // 2:]])
    m, e, neg = decompose(x)
    k = -(-(bits + 2) // b) + 1
    limbs = to_limbs(m, e, neg, emin, b, k)
    for j, v in enumerate(values):
        exact = sum(int(limbs[i, 0, j]) << (i * b) for i in range(k))
        assert Fraction(exact) * Fraction(2) ** int(emin[0]) == Fraction(v)
    normalize(limbs, b)
    np.testing.assert_array_equal(from_limbs(limbs, b, emin), x)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=8), widths, st.integers(0, 3))
def test_to_limbs_of_small_values_takes_two_limbs_and_is_exact(values, b, extra):
    # Values of a narrow range: the int64 path, with limbs above the second zero.
    x = np.array([values])
    emin, bits = general_scale([x])
    m, e, neg = decompose(x)
    k = max(2, -(-(bits + 2) // b)) + extra
    limbs = to_limbs(m, e, neg, emin, b, k)
    assert value_of(limbs, b) == [int(Fraction(v) / Fraction(2) ** int(emin[0])) for v in values]
    normalize(limbs, b)
    np.testing.assert_array_equal(from_limbs(limbs, b, emin), x)


@settings(max_examples=200, deadline=None)
@given(widths, st.integers(2, 4), st.data())
def test_split_int64_holds_values_below_its_bound(b, k, data):
    bound = 1 << (2 * b - 1)
    values = data.draw(st.lists(st.one_of(st.integers(-bound + 1, bound - 1), st.sampled_from([0, -1, bound - 1, -bound + 1])),
                                min_size=1, max_size=8))
    limbs = split_int64(np.array(values, dtype=np.int64), b, k)
    assert limbs.shape == (k, len(values))
    assert value_of(limbs, b) == values
    assert ((limbs[0] >= 0) & (limbs[0] < 1 << b)).all() and not limbs[2:].any()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=8),
    st.integers(1, 4),
)
def test_small_integer_path_keeps_signs_for_every_limb_count(values, k):
    x = np.array([values], dtype=np.float64)
    fast = small_scale([x[:, :1], x[:, 1:]], 32)
    if fast is None:
        return
    emin, bits = fast
    limbs = split_int64((x * 2.0 ** -int(emin[0])).astype(np.int64), 32, k)
    if k == 1 and bits > 31:
        return
    for j, v in enumerate(values):
        exact = sum(int(limbs[i, 0, j]) << (32 * i) for i in range(k))
        assert Fraction(exact) * Fraction(2) ** int(emin[0]) == Fraction(v)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(2.0**-10, 2.0**10, width=32), min_size=4, max_size=4), min_size=1, max_size=3),
       st.lists(st.booleans(), min_size=4, max_size=4), st.sampled_from([24, 31, 32]))
def test_small_scale_takes_float32_data_of_a_modest_range(rows, signs, b):
    x = np.array(rows) * np.where(signs, -1.0, 1.0)
    fast = small_scale([x[:, :2], x[:, 2:]], b)
    assert fast is not None
    emin, bits = fast
    assert bits <= min(62, 2 * b - 1)
    for row, e in zip(x, emin):
        scaled = [Fraction(float(v)) / Fraction(2) ** int(e) for v in row]
        assert all(s.denominator == 1 and abs(s) < 2**bits for s in scaled)


def test_small_scale_leaves_wide_or_fine_values_to_the_general_path():
    assert small_scale([np.array([[1.0, 2.0**-60]])], 32) is None  # more than 62 bits
    assert small_scale([np.array([[1.0 + 2.0**-40]])], 32) is None  # more than 24 significant bits


def _small_scale_reference(rows: list[list[float]], b: int | None) -> tuple[list[int], int] | None:
    """``small_scale`` from its definition, in Python integers: values of at most 24 significant
    bits, each probe's ``emin`` 24 below the exponent of its smallest nonzero magnitude
    (``float32_scale`` for ``b=None``: no cap on the bits)."""
    emins, bits = [], 0
    for row in rows:
        nonzero = [Fraction(v) for v in row if v != 0]
        if any(len(bin(abs(f.numerator)).rstrip("0")) - 2 > 24 for f in nonzero):
            return None
        low = min((abs(f) for f in nonzero), default=Fraction(1))
        peak = max([abs(f) for f in nonzero] + [low])
        exponent = lambda f: math.frexp(float(f))[1]  # noqa: E731  (f = m · 2^e, 0.5 <= m < 1)
        emin = exponent(low) - 24
        emins.append(emin)
        bits = max(bits, exponent(peak) - emin + 1)
    if (b is not None and bits > min(62, 2 * b - 1)) or min(emins) < -1000:
        return None
    return emins, bits


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(st.just(0.0), st.floats(width=32, allow_nan=False, allow_infinity=False),
                                   st.floats(allow_nan=False, allow_infinity=False)), min_size=1, max_size=6),
                min_size=1, max_size=3).filter(lambda rows: len({len(r) for r in rows}) == 1),
       st.sampled_from([16, 31, 32]))
def test_small_scale_matches_its_definition(rows, b):
    # float32 values (24 significant bits) and any float64: small_scale reads them from their bits.
    x = np.array(rows, dtype=np.float64)
    cut = x.shape[1] // 2
    got = small_scale([x[:, :cut], x[:, cut:]], b)
    expected = _small_scale_reference(rows, b)
    for got, expected in ((got, expected), (float32_scale([x[:, :cut], x[:, cut:]]), _small_scale_reference(rows, None))):
        if expected is None:
            assert got is None
        else:
            assert got is not None and got[0].tolist() == expected[0] and got[1] == expected[1]


@settings(max_examples=300, deadline=None)
@given(widths, st.data())
def test_float_limbs_cut_float_integers_exactly(b, data):
    # Integers of up to 53 significant bits anywhere below 2^1000, either sign: float64 floor
    # division by 2^b is exact at every step.
    k = data.draw(st.integers(1, 1000 // b + 1))
    top = min(k * b, 1000)
    value = st.builds(lambda m, s: m << s, st.integers(0, (1 << 53) - 1), st.integers(0, 1000)).filter(
        lambda v: v < 1 << top)
    values = [v if data.draw(st.booleans()) else -v for v in data.draw(st.lists(value, min_size=1, max_size=6))]
    got = float_limbs(np.array([float(v) for v in values]), b, np.empty((k, len(values)), dtype=np.int64))
    assert value_of(got, b) == values
    assert ((got[:-1] >= 0) & (got[:-1] < 1 << b)).all() and (np.abs(got[-1]) <= 1 << b).all()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(1 << 62) + 1, (1 << 62) - 1), min_size=1, max_size=6), st.integers(-990, 890),
       st.sampled_from([1, 2]), st.sampled_from([31, 32]))
def test_from_limbs_takes_values_promised_below_2_62_unchecked(values, exponent, k, b):
    # The transform fits its limbs (fit): one or two limbs then hold values below 2^61.
    if k == 1:
        values = [v >> b for v in values]
    limbs = limbs_of(values, b, k)[:, None, :]
    got = from_limbs(limbs, b, np.array([exponent]), int64=True)[0]
    assert got.tolist() == [rounded(v, exponent) for v in values]
