"""Exact integers as int64 limbs, and their correctly rounded float64 values.

An integer is held as *limbs* ``value = Σ_j limb_j · 2^(j·b)``, one int64 array per limb
(the first axis of a limb array), for a limb width ``b`` of at most 32 bits that the caller
chooses so that sums of limbs cannot overflow an int64 before the next carry pass.
Additions run limb by limb with carries left pending; :func:`normalize` propagates them, so
that limbs ``0..k-2`` lie in ``[0, 2^b)`` and the top limb carries the sign. Nothing is
reduced modulo anything, so nothing needs division.

Float64 values are binary rationals ``±m · 2^e`` (:func:`decompose`). Scaled by a common
power of two ``2^-emin`` (per probe: :func:`small_scale` for float32 data, cheaply;
:func:`general_scale` for any float64) they become integers (:func:`to_limbs`,
:func:`split_int64`). :func:`from_limbs` rounds limbs times ``2^emin`` back to float64
correctly (to nearest, ties to even): by the hardware's int64 conversion when the value fits
in an int64, by one float64 addition of two exact parts for three or four limbs, otherwise
through a window of its top bits with a sticky bit for any bit below, so that the
conversion rounds exactly once.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "add_limbs",
    "decompose",
    "fit",
    "float32_scale",
    "float_limbs",
    "from_limbs",
    "general_scale",
    "normalize",
    "small_scale",
    "split_int64",
    "to_limbs",
]

_MANTISSA = (1 << 52) - 1
_MAGNITUDE = (1 << 63) - 1
# The float64 mantissa bits that a float32 value (24 significant bits) leaves 0.
_BELOW_FLOAT32 = (1 << 29) - 1
# Up to this many bits below the top limb, from_limbs cuts each value at its own bit (_round_shifted).
_SHIFTED_BITS = 100


def small_scale(parts: list[np.ndarray], b: int) -> tuple[np.ndarray, int] | None:
    """The common case, cheaply: values with at most 24 significant bits (float32 data)
    whose scaled integers fit in ``min(62, 2b - 1)`` bits.

    Parameters
    ----------
    parts : list of numpy.ndarray
        The layers' finite values, ``(P, N_L)`` each.
    b : int
        The limb width: two limbs must hold every scaled value.

    Returns
    -------
    (numpy.ndarray, int) or None
        Per probe the exponent ``emin`` that makes every value ``v · 2^-emin`` an int64,
        and the largest bit length; None when the values do not qualify, and the general
        path (:func:`general_scale`) applies.
    """
    scaled = float32_scale(parts)
    return scaled if scaled is not None and scaled[1] <= min(62, 2 * b - 1) else None


def float32_scale(parts: list[np.ndarray]) -> tuple[np.ndarray, int] | None:
    """:func:`general_scale` for values with at most 24 significant bits (float32 data),
    read from their bits in a few integer passes; None for other values (or values below
    2^-1000, which may be subnormal).

    Parameters
    ----------
    parts : list of numpy.ndarray
        The layers' finite values, ``(P, N_L)`` each.

    Returns
    -------
    (numpy.ndarray, int) or None
        Per probe an exponent ``emin`` that makes every ``v · 2^-emin`` an integer, and
        a bound on their bit lengths: every ``|v| · 2^-emin < 2^bits``.
    """
    p = parts[0].shape[0]
    # Read from the bits, in integer passes: a float64's bits without the sign order like
    # its magnitude, and a value of at most 24 significant bits has its 29 low mantissa bits 0.
    peak = np.zeros(p, dtype=np.int64)
    low = np.full(p, -1, dtype=np.int64).view(np.uint64)
    for v in parts:
        bits = np.ascontiguousarray(v, dtype=np.float64).view(np.int64)
        # One reduction, no temporary: a low bit set anywhere is set in the OR of all.
        if int(np.bitwise_or.reduce(bits, axis=None, initial=0)) & _BELOW_FLOAT32:
            return None
        magnitude = bits & _MAGNITUDE
        peak = np.maximum(peak, magnitude.max(axis=1, initial=0))
        # Zeros wrap to the largest unsigned value, so the minimum is the smallest nonzero magnitude, less 1.
        magnitude -= 1
        low = np.minimum(low, magnitude.view(np.uint64).min(axis=1, initial=np.iinfo(np.uint64).max))
    zero = low == np.iinfo(np.uint64).max
    low = np.where(zero, 1.0, (low + np.uint64(1)).view(np.float64))
    peak = np.where(zero, 1.0, peak.view(np.float64))
    # A float32 value x = f · 2^(e-24) with integer f < 2^24, where x = m · 2^e, 0.5 <= m < 1;
    # every nonzero value is at least `low`, so its e is at least low's: v · 2^-emin is an integer.
    emin = np.frexp(low)[1].astype(np.int64) - 24
    bits = int((np.frexp(np.maximum(peak, low))[1] - emin).max(initial=0)) + 1
    # Below 2^-1000 float64 values may be subnormal, whose low bits say nothing of float32.
    if np.any(emin < -1000):
        return None
    return emin, bits


def split_int64(v: np.ndarray, b: int, k: int) -> np.ndarray:
    """``k`` limbs ``(k, *v.shape)`` of int64 values below ``2^(2b-1)`` in magnitude.

    Two limbs hold them, the rest are zero; limb 0 is in ``[0, 2^b)`` and limb 1 signed.
    With ``k == 1`` the single limb is the value itself.
    """
    out = np.empty((k,) + v.shape, dtype=np.int64)
    out[2:] = 0
    if k == 1:
        # A single limb is the top limb: it carries the sign.
        out[0] = v
        return out
    np.bitwise_and(v, (1 << b) - 1, out=out[0])
    np.right_shift(v, b, out=out[1])
    return out


def float_limbs(t: np.ndarray, b: int, out: np.ndarray) -> np.ndarray:
    """Limbs of integer-valued float64 ``t`` with ``|t| < 2^(k·b)``, written into ``out``
    ``(k, *t.shape)`` (int64) and returned.

    Limbs below the top are in ``[0, 2^b)``, the top one signed, taken by floor division by
    ``2^b`` in float64: every step is exact (a floor, a product by a power of two, and a
    difference that is an integer below ``2^b``). ``|t|`` must stay below ``2^1000``.
    About five passes a limb, against a dozen for :func:`decompose` and :func:`to_limbs`.
    """
    k = out.shape[0]
    rest = t
    quotient, low = np.empty(t.shape), np.empty(t.shape)
    for j in range(k - 1):
        np.multiply(rest, 2.0 ** -b, out=quotient)
        np.floor(quotient, out=quotient)
        np.multiply(quotient, 2.0 ** b, out=low)
        np.subtract(rest, low, out=low)
        out[j] = low
        # The quotient is the next step's rest; the old rest's memory (not t's) takes the next quotient.
        if rest is t:
            rest = np.empty(t.shape)
        rest, quotient = quotient, rest
    out[k - 1] = rest
    return out


def decompose(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact binary form of finite float64 values, read from their bits.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        int64 mantissas ``m < 2^53``, int64 exponents ``e`` and the signs (True where the
        sign bit is set), with ``|v| = m · 2^e`` exactly (subnormals included).
    """
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    field = (bits >> 52) & 0x7FF
    normal = field != 0
    m = (bits & _MANTISSA) | (normal.astype(np.int64) << 52)
    e = field - 1075 + ~normal
    return m, e, bits < 0


def _low_bit(m: np.ndarray) -> np.ndarray:
    """Exponent of the lowest set bit of each positive ``m`` (undefined for 0)."""
    return (((m & -m).astype(np.float64).view(np.int64)) >> 52) - 1023


def general_scale(parts: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """The common scale of any finite float64 values.

    Parameters
    ----------
    parts : list of numpy.ndarray
        The layers' values, ``(P, N_L)`` each.

    Returns
    -------
    (numpy.ndarray, int)
        Per probe the largest exponent ``emin`` (at least -1074) with every ``v · 2^-emin``
        an integer (0 for a probe whose values are all zero), and a bound on their bit
        lengths: every ``|v| · 2^-emin < 2^bits``.
    """
    big = np.iinfo(np.int64).max
    p = parts[0].shape[0]
    emin, high = np.full(p, big), np.full(p, -big)
    for v in parts:
        m, e, _ = decompose(v)
        nz = m != 0
        emin = np.minimum(emin, np.where(nz, e + _low_bit(m), big).min(axis=1, initial=big))
        high = np.maximum(high, np.where(nz, e + 53, -big).max(axis=1, initial=-big))
    emin = np.where(emin == big, 0, emin)
    return emin.astype(np.int64), int(np.where(high > -big, high - emin, 0).max(initial=0))


def to_limbs(m: np.ndarray, e: np.ndarray, negative: np.ndarray, emin: np.ndarray, b: int, k: int) -> np.ndarray:
    """Exact limbs ``(k, P, N)`` of ``±m · 2^(e - emin)``, for :func:`decompose`'s ``(P, N)`` output.

    ``emin`` ``(P,)`` must make every value an integer (:func:`general_scale`), and ``k``
    limbs of ``b`` bits must hold it with its sign. The limbs need not be normalised.
    """
    shift = e - emin[:, None]
    mask = np.int64((1 << b) - 1)
    if int(shift.max(initial=0)) + 53 <= min(62, 2 * b - 1):
        # Every value is an int64 already and two limbs hold it (the rest are zero). Limb 1
        # may be negative: the representation need not be normalised, only bounded.
        v = (m >> np.maximum(-shift, 0)) << np.maximum(shift, 0)
        np.negative(v, out=v, where=negative)
        return split_int64(v, b, k)
    out = np.empty((k,) + m.shape, dtype=np.int64)
    # Every |value| is below 2^(max shift + 53): the limbs above its top one are 0.
    used = min(k, max(1, (int(shift.max(initial=0)) + 53) // b + 1))
    out[used:] = 0
    for j in range(used):
        r = j * b - shift
        # (m >> r) for r >= 0 and (m << -r) for r < 0, in one expression; numpy shifts of
        # 64 or more give 0.
        out[j] = ((m >> np.maximum(r, 0)) << np.maximum(-r, 0)) & mask
    np.negative(out[:used], out=out[:used], where=negative[None])
    return out


def normalize(x: np.ndarray, b: int) -> None:
    """Propagate carries in place so limbs ``0..k-2`` lie in ``[0, 2^b)`` and the top limb carries the sign.

    The value is unchanged. Each limb of ``x`` ``(k, ...)`` must be below ``2^62`` in
    magnitude, so that no carry overflows an int64.
    """
    mask = (1 << b) - 1
    for j in range(x.shape[0] - 1):
        carry = x[j] >> b
        x[j] &= mask
        x[j + 1] += carry


def fit(x: np.ndarray, b: int) -> np.ndarray:
    """Normalised limbs ``(k, ...)`` of the same integers in the fewest limbs whose top limb
    lies in ``[-2^(b-3), 2^(b-3))``, so that ``|value| < 2^(k'·b - 3)``.

    Limbs are dropped while the top one is only the sign of the next (0 or -1 everywhere),
    and added while the top one is out of range (after a carry pass its magnitude may reach
    ``2^62``); no limb width ever overflows, so the value is unchanged. Returns ``x`` itself,
    a view of it (whose top limb may have been rewritten in place) or, when a limb is
    added, a new array.
    """
    bound = 1 << (b - 3)
    # The top limb's range is read once per limb added or dropped (the merged one's is the next top's).
    low, high = int(x[-1].min(initial=0)), int(x[-1].max(initial=0))
    while low < -bound or high >= bound:
        x = np.concatenate([x, (x[-1] >> b)[None]])
        x[-2] &= (1 << b) - 1
        low, high = int(x[-1].min(initial=0)), int(x[-1].max(initial=0))
    while x.shape[0] > 1 and low >= -1 and high <= 0:
        # With limbs below the top in [0, 2^b), the top two read as one signed limb.
        merged = x[-2] + (x[-1] << b)
        low, high = int(merged.min(initial=0)), int(merged.max(initial=0))
        if low < -bound or high >= bound:
            break
        x = x[:-1]
        x[-1] = merged
    return x


def from_limbs(
    x: np.ndarray, b: int, emin: np.ndarray, int64: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """Correctly rounded float64 ``(P, N)`` of normalised limbs ``(k, P, N)`` times ``2^emin``.

    Rounds to nearest, ties to even, once; a value past the float64 range gives ``±inf``
    (with numpy's overflow warning). ``emin`` ``(P,)`` is at least -1074, as
    :func:`general_scale` gives it: every value with more than 53 bits is then a normal
    float64, so the subnormal range never rounds a second time. ``int64=True`` promises
    that every value (the limbs' integer) is below ``2^62`` in magnitude, as a majorant
    can tell: with two limbs or one they are then converted without checking. ``out``, a
    float64 array of shape ``(P, N)``, receives the result, which is returned.
    """
    k, shape = x.shape[0], x.shape[1:]
    if out is None:
        out = np.empty(shape)
    if x.size == 0:
        out[...] = 0.0
        return out
    result = _from_limbs(x, b, emin, int64, out)
    if result is not out:
        out[...] = result
    return out


def _from_limbs(x: np.ndarray, b: int, emin: np.ndarray, int64: bool, out: np.ndarray) -> np.ndarray:
    """``from_limbs``'s result, written into ``out`` by the paths that write each value once (and returned)."""
    k, shape = x.shape[0], x.shape[1:]
    flat = x.reshape(k, -1)
    # Values that fit in an int64 are converted by the hardware, which rounds correctly.
    # With limbs normalised, a value fits when the limbs above the second are all zero
    # (non-negative) or the sign extension of -1 (negative), and the second is in range.
    head = 1 << (62 - b)
    if k <= 2:
        # For b = 32 this wraps modulo 2^64, which is exactly right for the negative case.
        low = flat[0] if k == 1 else flat[0] + (flat[1] << b)
        if (k == 1 or int64 or bool((np.abs(flat[1]) < head).all())) and -1000 < int(emin.min()) \
                and int(emin.max()) < 900:
            # Scaling by a power of two is exact away from the float64 range's ends.
            return np.multiply(low.reshape(shape), np.exp2(emin.astype(np.float64))[:, None], out=out)
    if k >= 3 and -1000 < int(emin.min()) and int(emin.max()) + b * max(0, k - 4) < 900 \
            and -(1 << (61 - b)) <= int(flat[-1].min()) and int(flat[-1].max()) < 1 << (61 - b):
        # A view of ``out`` as (P, N), unless ``out`` is a view that cannot be seen so (then a copy).
        target = out.reshape(emin.size, -1)
        result = _round_two_doubles(x.reshape(k, emin.size, -1), b, emin.astype(np.int64), target)
        return out if np.may_share_memory(target, out) else result.reshape(shape)
    if b * (k - 1) <= _SHIFTED_BITS:
        return _round_shifted(x.reshape(k, emin.size, -1), b, emin.astype(np.int64)).reshape(shape)
    scale = np.repeat(emin.astype(np.int64), flat.shape[1] // max(1, emin.size))
    # Many narrow limbs (k >= 3 here): the 63-bit window, after the int64 values.
    low = flat[0] + (flat[1] << b)
    zero_above = ~flat[2:].any(axis=0)
    minus_one_above = (flat[2:-1] == (1 << b) - 1).all(axis=0) & (flat[-1] == -1)
    fits = (zero_above & (flat[1] < head)) | (minus_one_above & (flat[1] >= (1 << b) - head))
    if b < 32:
        low = np.where(minus_one_above, low - (np.int64(1) << (2 * b)), low)
    out = np.empty(flat.shape[1], dtype=np.float64)
    out[fits] = np.ldexp(low[fits].astype(np.float64), scale[fits].astype(np.int32))
    rest = ~fits
    if rest.any():
        out[rest] = _round_window(flat[:, rest], b, scale[rest])
    return out.reshape(shape)


def _round_two_doubles(x: np.ndarray, b: int, emin: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``from_limbs`` of normalised limbs ``(k, P, N)``, ``k >= 3``, as one float64 addition.

    Each value is ``V = A·2^(b(k-2)) + R`` with ``A`` its top two limbs (an int64: the
    caller checks that the top limb is below ``2^(61-b)``) and ``R >= 0`` the rest. Where
    ``|A| < 2^53`` both ``A·2^(b(k-2))`` and ``R`` (cut to 53 bits) are exact float64
    values, and IEEE addition rounds their sum once, correctly. Of ``R`` the two limbs
    below ``A`` are kept; their low ``c`` bits (``c = 2b - 53`` for limbs of more than 26
    bits, else 1 where limbs lie below those two, 0 otherwise) and any limb below them are
    replaced by a sticky bit (round to odd at ``2^c``), which leaves the rounding to 53
    bits unchanged wherever ``|V| >= 2^(c+54) · 2^(b(k-4))``, i.e. wherever
    ``|A| >= 2^(c+54-2b) + 1``. Other values (tiny, or past 2^53 in their top limbs)
    take :func:`_round_shifted` or, for many limbs, :func:`_round_window`. ``emin`` and
    ``emin + b(k-4)`` must lie in (-1000, 900), so that scaling by powers of two is exact.

    About a dozen numpy passes over the values (and one per limb below the top four),
    against some fifty for the per-value cut; this rounds the deep layers of
    convolutional networks.
    """
    k = x.shape[0]
    high = x[k - 1] << b
    high += x[k - 2]
    cut = 0 if k == 3 else max(1 if k > 4 else 0, 2 * b - 53)
    base = emin + b * max(0, k - 4)
    if k == 3:
        low = x[0]
    else:
        low = (x[k - 3] << (b - cut)) | (x[k - 4] >> cut)
        if cut:
            sticky = (x[k - 4] & ((1 << cut) - 1)) != 0
            for j in range(k - 4):
                sticky |= x[j] != 0
            low |= sticky
    floor = (1 << (cut + 54 - 2 * b)) + 1 if cut else 0
    magnitude = np.abs(high)
    magnitude -= floor
    # Unsigned, |A| below `floor` wraps past the bound too.
    others = np.flatnonzero(magnitude.view(np.uint64) >= (1 << 53) - floor)
    np.multiply(high, np.exp2((base + b * 2 if k > 3 else emin + b).astype(np.float64))[:, None], out=out)
    rest = low.astype(np.float64)
    rest *= np.exp2((base + cut).astype(np.float64))[:, None]
    out += rest
    if others.size:
        columns = x.reshape(k, -1)[:, others]
        per_column = np.repeat(emin, x.shape[2])[others]
        # By row and column: ``out`` may be a view into a wider array.
        out[np.divmod(others, x.shape[2])] = (
            _round_shifted(columns[:, :, None], b, per_column)[:, 0] if b * (k - 1) <= _SHIFTED_BITS
            else _round_window(columns, b, per_column)
        )
    return out


def _round_shifted(x: np.ndarray, b: int, emin: np.ndarray) -> np.ndarray:
    """``from_limbs`` of normalised limbs ``(k, P, N)`` with ``b·(k-1) <= _SHIFTED_BITS``, without per-column gathers.

    Each value ``V`` is cut at its own bit ``s``, about 60 below its top:
    ``W = floor(V / 2^s)`` fits an int64, and OR-ing a sticky bit for ``V mod 2^s != 0``
    rounds ``V / 2^s`` to odd, so the hardware's int64→float64 conversion of ``W`` then
    rounds once, correctly (``W`` has at least 55 bits whenever ``s > 0``). Limbs above the
    cut are shifted left, the one across it right (floor, for either sign), those below
    only set the sticky bit; the terms are summed modulo 2^64, which is exact because the
    true ``W`` is below 2^62. ``s`` comes from a float64 estimate of ``V`` by Horner's rule,
    whose partial sums are ``floor(V / 2^(b·j))``: its error is below
    ``k·2^-53·|V| + 2^(b·(k-1)-52)``, within a factor 2 of ``|V|`` wherever ``|V| >= 2^58``
    as long as ``b·(k-1)`` stays below about 100.
    """
    k = x.shape[0]
    estimate = x[k - 1].astype(np.float64)
    for j in range(k - 2, -1, -1):
        estimate *= float(1 << b)
        estimate += x[j]
    # |estimate| < 2^e: W keeps about 60 bits, 59 to 61 with the estimate's error.
    s = np.frexp(estimate)[1].astype(np.int64) - 60
    np.maximum(s, 0, out=s)
    w = np.zeros(x.shape[1:], dtype=np.int64)
    sticky = np.zeros(x.shape[1:], dtype=np.int64)
    for j in range(k):
        # numpy shifts of 64 or more give 0 (or -1 for a negative value shifted right), as
        # the sum modulo 2^64 needs; a limb wholly below the cut is non-negative.
        right = s - b * j
        left = np.maximum(-right, 0)
        np.maximum(right, 0, out=right)
        w += (x[j] >> right) << left
        sticky |= x[j] & ((np.int64(1) << right) - 1)
    w |= sticky != 0
    s += emin[:, None]
    return np.ldexp(w.astype(np.float64), s.astype(np.int32))


def _round_window(x: np.ndarray, b: int, scale: np.ndarray) -> np.ndarray:
    """The general case of ``from_limbs`` on ``(k, M)`` limbs.

    The top 63 bits of each magnitude go into one int64, with a sticky bit for anything
    below, so the hardware int64→float64 conversion rounds exactly once.
    """
    negative = x[-1] < 0
    if negative.any():
        x = np.where(negative[None], -x, x)
        normalize(x, b)
    k, count = x.shape
    nonzero = x != 0
    top = np.full(count, -1, dtype=np.int64)
    for j in range(k):
        top[nonzero[j]] = j
    window = math.ceil(62 / b) + 1
    column = np.arange(count)
    linear = x.reshape(-1)

    def limb(offset: int) -> np.ndarray:
        idx = top - offset
        return np.where(idx >= 0, linear[np.maximum(idx, 0) * count + column], 0)

    t = limb(0)
    b0 = ((t.astype(np.float64).view(np.int64) >> 52) - 1022) * (t > 0)
    bits = b0.copy()
    sticky = np.zeros(count, dtype=bool)
    for i in range(1, window):
        g = limb(i)
        take = np.clip(63 - bits, 0, b)
        t = (t << take) | (g >> (b - take))
        sticky |= (g & ((np.int64(1) << (b - take)) - 1)) != 0
        bits += take
    if k > window:
        below = np.logical_or.accumulate(nonzero, axis=0).reshape(-1)
        idx = top - window
        sticky |= np.where(idx >= 0, below[np.maximum(idx, 0) * count + column], False)
    t |= sticky
    exponent = top * b + b0 - bits + scale
    out = np.ldexp(t.astype(np.float64), exponent.astype(np.int32))
    out[top < 0] = 0.0
    return np.where(negative, -out, out)


def add_limbs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b``, a new array, for limb arrays whose limb counts (first axis) may differ."""
    if a.shape[0] < b.shape[0]:
        a, b = b, a
    out = a.copy()
    out[: b.shape[0]] += b
    return out
