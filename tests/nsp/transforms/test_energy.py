"""nsp.energy.change_since against exact rational arithmetic, on spectra spanning hundreds of decades."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.transforms.energy import CHANGE_MEASURES, change_since


def exact_relative(now, base) -> float:
    # ‖now − base‖² / ‖base‖² as an exact rational; its square root through exact integer logs.
    ratio = sum((Fraction(a) - Fraction(b)) ** 2 for a, b in zip(now, base)) / sum(Fraction(b) ** 2 for b in base)
    if ratio == 0:
        return 0.0
    return 10 ** ((math.log10(ratio.numerator) - math.log10(ratio.denominator)) / 2)


def exact_log10_energy(values) -> float:
    total = sum(Fraction(v) ** 2 for v in values)
    # log10 of a huge or tiny rational without floats overflowing: numerator and denominator apart.
    return (math.log10(total.numerator) if total.numerator else -math.inf) - math.log10(total.denominator)


coefficient = st.builds(
    lambda sign, mantissa, exponent: sign * mantissa * 10.0**exponent,
    st.sampled_from([-1.0, 1.0]),
    st.floats(1.0, 9.99),
    st.integers(-150, 150),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(coefficient, coefficient), min_size=1, max_size=12))
def test_measures_match_exact_rationals_across_300_decades(pairs):
    base = np.array([b for b, _ in pairs])
    now = np.array([a for _, a in pairs])
    change = change_since([base], [now])
    assert set(change) == set(CHANGE_MEASURES)
    assert change["relative"][0] == pytest.approx(exact_relative(now, base), rel=1e-12)
    assert change["log10_energy"][0] == pytest.approx(exact_log10_energy(now) - exact_log10_energy(base), abs=1e-9)
    moved = sorted(abs(math.log10(abs(a)) - math.log10(abs(b))) for b, a in pairs)
    middle = len(moved) // 2
    median = moved[middle] if len(moved) % 2 else (moved[middle - 1] + moved[middle]) / 2
    assert change["decades"][0] == pytest.approx(median, abs=1e-9)
    assert change["sign_flips"][0] == sum((a > 0) != (b > 0) for b, a in pairs) / len(pairs)


def test_zero_layers_and_unchanged_spectra():
    zero, layer = np.zeros(4), np.array([1e-120, -3e80, 2.0])
    same = change_since([zero, layer], [zero, layer])
    for measure in CHANGE_MEASURES:
        np.testing.assert_array_equal(same[measure], [0.0, 0.0])
    grown = change_since([zero], [np.array([0.0, 1.0, 0.0, 0.0])])
    assert grown["relative"][0] == math.inf and grown["log10_energy"][0] == math.inf
    assert math.isnan(grown["decades"][0]) and grown["sign_flips"][0] == 0.25


def test_a_coefficient_that_moves_one_decade_counts_as_one_whatever_its_size():
    base = np.array([1e-100, 1e100, 1.0])
    change = change_since([base], [base * 10])
    assert change["decades"][0] == pytest.approx(1.0)
    # The relative change sees only the dominant coefficient: 9 times as large a difference.
    assert change["relative"][0] == pytest.approx(9.0)


def test_mismatched_layers_are_refused():
    with pytest.raises(ValueError, match=r"nsp.energy.change_since: the spectra differ in layers"):
        change_since([np.zeros(3)], [np.zeros(4)])
