r"""Compiled CPU kernels for the simplex and L1-ball projections (optional: needs numba).

The threshold :math:`\tau` of a row solves :math:`f(\tau) = \sum_i \max(a_i - \tau, 0) = r`
(``a = |x|`` for the ball, ``a = x`` for the simplex). Two facts make it cheap:

- every :math:`\rho \le \tau` is a *filter*: values :math:`a_i \le \rho` are outside the support,
  and for any subset :math:`V` of the values, :math:`(\sum V - r) / |V| \le \tau_V \le \tau`;
- Newton's method on :math:`f` (Michelot 1986) started left of the root stays left of it,
  rises monotonically, and stops, exactly, once the set :math:`\{a > \rho\}` no longer changes.

Per row (expected O(n), no sort; "Newton with filtering" in the sense of Condat 2016):

1. one vectorized pass stores the maximum of each block of ``_BLOCK`` values (on the integer
   view of the floats: integer maxima vectorize, float maxima with their NaN rules do not);
2. Newton on the block maxima (a subset) gives a lower bound :math:`\rho` of :math:`\tau`,
   already close to it;
3. only blocks whose maximum exceeds :math:`\rho` are visited; their values above
   :math:`\rho` are selected without a branch per value (one vectorized comparison sets a bit
   per value, then only the set bits are read) into the output row (the scratch buffer), and
   :math:`\rho` is raised with each block;
4. Newton on those few candidates, vectorized, gives :math:`\tau` exactly; after a few steps
   each step also compacts the candidates (each step drops at least one, so an adversarial
   row costs at most quadratic time in its candidates, as with Michelot's and Condat's
   algorithms; random rows take a handful of steps);
5. one vectorized pass writes the output, already scaled onto the set (float32: the norm of
   the output is summed over the candidates first, see :func:`_scale`).

Rows of at most ``_BLOCK`` values skip steps 1-3: all their values are candidates.
So a row is read twice (once from the cache) and written once; nothing of the input's size is allocated.
L1 ball: a row whose largest ``|x|`` is at most ``r`` gets a vectorized sum to tell whether it
is inside the ball (then it is copied unchanged); outside, :math:`\tau > 0` filters zeros too.

Every threshold is kept relative to the row's largest value ``top`` (shift invariance):
values are compared and summed as ``a - top`` in float64, exact on the support, so a row
``noise + 1e8`` loses nothing. The threshold is accumulated in float64 over the exact support;
outputs are formed as the torch paths form them, ``max(((a - top) - t) - e, 0)`` with the
threshold split as ``t + e`` in the row's dtype (times ``sign(x)`` for the ball), so every
path agrees up to a few ulps of ``r``. NaN and Inf are detected by the passes above and reported per row.

Rows are split among threads in chunks of about ``_CHUNK_VALUES`` values, which each thread claims
from a shared atomic counter until none is left (the kernels release the GIL; a small pool of Python
threads drives the others, which stays clear of numba's OpenMP layer and of ``fork``): the calling
thread starts at once, and a thread that wakes late or shares its core claims less. Each row is
projected by the same code whatever the thread count, so the outputs are bitwise those of one thread.
A call of fewer than ``_MIN_WORK`` values per thread uses fewer threads. With fewer rows than threads,
long rows are cut into segments filtered in parallel and their candidates merged
(each segment's bound is a subset's, hence a bound for the whole row).

:mod:`constrain._simplex` loads this module on the first CPU projection unless numba is
missing or ``CONSTRAIN_NO_NUMBA=1``. Compiled code is cached on disk (``cache=True``), so only
the first run on a machine pays the compilation (about ten seconds per dtype; loading the
cached code takes about a second per process).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import numba as nb
import numpy as np
from numba.core import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(function: _F) -> _F:
    """Compile ``function`` (cached on disk, releasing the GIL, numpy's error model: 1/0 is inf)."""
    # the Dispatcher is called like the function it compiles
    return cast(_F, nb.njit(function, cache=True, nogil=True, error_model="numpy"))


def _jit_reassoc(function: _F) -> _F:
    """:func:`_jit` allowing reassociation of sums (so that reductions vectorize)."""
    return cast(_F, nb.njit(function, fastmath={"reassoc"}, cache=True, nogil=True, error_model="numpy"))


#: Values summarized by one maximum in the first pass (at most 64: :func:`_gather` keeps a bit per value in an integer).
_BLOCK = 64
#: Newton steps on the candidates before each further step also compacts them.
_STEPS_BEFORE_COMPACTING = 4
#: Fewest values worth a thread of their own.
_MIN_WORK = 65536
#: Values per chunk of rows that a thread claims at a time (at least one row): about 10 us of work.
_CHUNK_VALUES = 16384


@_jit
def _block_maxima(xi, ball, keys):
    r"""Store the maximum of ``|x|`` (ball) or ``x`` over each block in ``keys`` (an integer view of floats).

    Works on the integer view ``xi`` of a row: without their sign bit, floats order like
    their bits; with it, once the other bits of negative numbers are flipped (an involution).
    Returns the bits of the largest value. A NaN sorts above +inf (with its sign bit set
    and for the simplex: below -inf, which the write pass finds). Full blocks run a loop of
    constant length (``_BLOCK``), which the compiler unrolls into vector maxima.
    """
    n = xi.shape[0]
    shift = xi.itemsize * 8 - 1
    mask = xi.dtype.type((1 << shift) - 1)
    top = xi[0] & 0  # typed like xi
    full = n // _BLOCK
    for b in range(full + (n % _BLOCK > 0)):
        start = b * _BLOCK
        if ball:
            m = xi[start] & mask
            if b < full:
                for j in range(_BLOCK):
                    k = xi[start + j] & mask
                    m = k if k > m else m
            else:
                for j in range(start, n):
                    k = xi[j] & mask
                    m = k if k > m else m
            keys[b] = m
        else:
            m = xi[start] ^ ((xi[start] >> shift) & mask)
            if b < full:
                for j in range(_BLOCK):
                    k = xi[start + j] ^ ((xi[start + j] >> shift) & mask)
                    m = k if k > m else m
            else:
                for j in range(start, n):
                    k = xi[j] ^ ((xi[j] >> shift) & mask)
                    m = k if k > m else m
            keys[b] = m ^ ((m >> shift) & mask)  # back to the float's bits
        top = m if b == 0 or m > top else top
    if not ball:
        top = top ^ ((top >> shift) & mask)
    return top


@_jit_reassoc
def _count_sum(values, t, top):
    """``(#{d > t}, sum of those d)`` over ``d = values - top`` (vectorized; in float64)."""
    c = 0
    s = 0.0
    for j in range(values.shape[0]):
        d = np.float64(values[j]) - top
        above = d > t
        c += above
        s += d if above else 0.0
    return c, s


@_jit_reassoc
def _sum_abs(xs):
    s = 0.0
    for j in range(xs.shape[0]):
        s += abs(xs[j])
    return s


@_jit
def _below(v, like):
    """The largest value of ``like``'s dtype at most ``v`` (a float64): every value above ``v`` is above it."""
    lo = like.dtype.type(v)
    return np.nextafter(lo, like.dtype.type(-np.inf)) if np.float64(lo) > v else lo


@_jit
def _gather(xs, ball, lo, aux, length):
    """Append the values ``a > lo`` of ``xs`` (at most 64 of them; ``a = |xs|`` when ``ball``) to ``aux[length:]``.

    Branch-free selection: one vectorized pass sets a bit per value above ``lo``, then only
    the set bits are visited (lowest first, so the values keep their order). Returns the new
    length; ``aux`` has room (``length`` never exceeds the values visited before).
    """
    bits = np.uint64(0)  # unsigned: bit 63 is a bit like the others
    if xs.shape[0] == _BLOCK:  # a full block: a loop of constant length, vectorized
        if ball:
            for j in range(_BLOCK):
                bits |= np.uint64(abs(xs[j]) > lo) << np.uint64(j)
        else:
            for j in range(_BLOCK):
                bits |= np.uint64(xs[j] > lo) << np.uint64(j)
    else:
        for j in range(xs.shape[0]):
            a = abs(xs[j]) if ball else xs[j]
            bits |= np.uint64(a > lo) << np.uint64(j)
    while bits != np.uint64(0):
        j = trailing_zeros(bits)
        aux[length] = abs(xs[j]) if ball else xs[j]
        length += 1
        bits &= bits - np.uint64(1)
    return length


@_jit
def _compact(aux, length, t, top):
    """Keep the values ``a`` with ``a - top > t`` of ``aux[:length]`` at its front; return how many."""
    kept = 0
    for j in range(length):
        a = aux[j]
        aux[kept] = a
        kept += np.float64(a) - top > t
    return kept


@_jit
def _newton(aux, length, r, rho, compact, top):
    r"""The threshold, relative to ``top``, of ``aux[:length]`` (radius ``r``) by Newton's method from the lower bound ``rho``,
    and how many candidates are left at the front of ``aux`` (a superset of the support).

    Works on ``d = aux - top`` (``top`` the row's largest value; shift-invariance of the
    threshold), so that a large common offset costs no precision. Exact: stops when the set
    above the iterate repeats, returning :math:`(\sum d - r)/\#` over it.
    ``compact``: steps after which each step also drops the values below the iterate.
    """
    previous = -1
    steps = 0
    while True:
        if steps >= compact:
            length = _compact(aux, length, rho, top)
        c, s = _count_sum(aux[:length], rho, top)
        if c == 0:  # rho rounded up onto the largest value: it is as close as it gets
            return rho, length
        new = (s - r) / c
        if c == previous:
            return new, length
        previous = c
        rho = max(rho, new)
        steps += 1


@_jit
def _under(rho):
    """``rho`` (relative to the row's top), or the float64 just below 0 if rounding carried it up there: top stays a candidate."""
    return rho if rho < 0.0 else -5e-324


@_jit
def _short_filter(xs, ball, r, aux, whole_row):
    """:func:`_filter` for a row of at most ``_BLOCK`` values: all of them are candidates."""
    top = -np.inf
    total = 0.0
    for j in range(xs.shape[0]):
        a = abs(xs[j]) if ball else xs[j]
        aux[j] = a
        total += a
        top = max(top, np.float64(a))
    if not np.isfinite(total):  # NaN or Inf
        return 0.0, 0, False, whole_row, 0.0
    if ball and total <= r and whole_row:
        return 0.0, 0, True, True, top
    shifted = 0.0  # the sum of a - top, exact where it matters (a offset by 1e8 costs nothing)
    for j in range(xs.shape[0]):
        shifted += np.float64(aux[j]) - top
    rho = _under(max(-r, (shifted - r) / xs.shape[0]))
    if ball and total > r:
        rho = max(rho, -top)  # outside the ball: tau > 0
    return rho, xs.shape[0], True, False, top


@_jit
def _filter(xs, xi, ball, r, aux, maxima, keys, whole_row):
    r"""Candidates for the threshold of ``xs`` (``|xs|`` when ``ball``) and radius ``r``.

    ``xi``: integer view of ``xs``; ``aux`` (not overlapping ``xs``) receives the candidates;
    ``maxima``: room for one value per block and one more, ``keys`` its integer view. Returns
    ``(rho, length, finite, inside, top)``: ``top`` is the largest value and ``aux[:length]``
    holds every value above ``top + rho``, ``rho`` a lower bound of the threshold relative to
    ``top`` (all thresholds here are relative to the top: exact for rows with a large common
    offset), hence the support; ``inside``: a ball row with :math:`\|x\|_1 \le r` (only when
    ``whole_row``; nothing else is computed then).
    """
    n = xs.shape[0]
    if n <= _BLOCK:
        return _short_filter(xs, ball, r, aux, whole_row)
    blocks = (n + _BLOCK - 1) // _BLOCK
    keys[blocks] = _block_maxima(xi, ball, keys)
    top = np.float64(maxima[blocks])
    if not np.isfinite(top):  # a NaN or +inf (simplex: -inf and NaNs with the sign bit set turn up in _write)
        return 0.0, 0, False, whole_row, 0.0
    rho = _under(-r)
    if ball:
        if top <= r:
            total = _sum_abs(xs)
            if total <= r and whole_row:
                return 0.0, 0, True, True, top
            if total > r:
                rho = max(rho, -top)
        else:
            rho = max(rho, -top)  # outside the ball: tau > 0
    # a lower bound from the block maxima (a subset of the values): a few Newton steps
    for _ in range(4 if blocks > 1 else 0):
        c, s = _count_sum(maxima[:blocks], rho, top)
        new = (s - r) / c
        if not new > rho:
            break
        rho = _under(new)
    length = 0
    total = 0.0
    for b in range(blocks):
        if np.float64(maxima[b]) - top > rho:
            start = b * _BLOCK
            before = length
            length = _gather(xs[start : min(n, start + _BLOCK)], ball, _below(top + rho, xs), aux, length)
            for j in range(before, length):
                total += np.float64(aux[j]) - top
            new = (total - r) / length
            if new > rho:
                rho = _under(new)
    return rho, length, True, False, top


@_jit
def _split(top, tau, like):
    """``(m, t, e)`` in ``like``'s dtype: the row's top ``m`` and the threshold ``tau`` (float64, relative to it) as ``t + e``."""
    t = like.dtype.type(tau)
    return like.dtype.type(top), t, like.dtype.type(tau - np.float64(t))


@_jit_reassoc
def _scale(aux, length, top, tau, r, ball):
    r"""The factor that puts a float32 row on the set: ``r / norm`` if :math:`\|y\|_1` (``norm``) is over ``r``
    (ball) or off ``r`` (simplex), else 1 (and always 1 for float64 rows).

    Rounding :math:`|x_i| - \tau` to float32 leaves :math:`\|y\|_1` off by up to about
    :math:`|S|\,\epsilon\,\tau` (relative to the input's scale, not to ``r``): the relative change
    of a few ulps puts the row on the set to the precision of ``r``, as
    :func:`constrain._simplex._finish` does for the torch paths. ``norm`` is the float64 sum
    of the outputs :func:`_write` forms, over the candidates ``aux[:length]`` (a superset of the
    support): no pass over the row.
    """
    one = aux.dtype.type(1)
    if aux.itemsize >= 8:
        return one
    m, t, e = _split(top, tau, aux)
    zero = m - m
    norm = 0.0
    for j in range(length):
        norm += max(((aux[j] - m) - t) - e, zero)
    if not norm > 0.0 or (norm <= r if ball else norm == r):
        return one
    return aux.dtype.type(r / norm)


@_jit_reassoc
def _write(xs, out, top, tau, ball, inside, scale):
    r"""``out = s max(((x - top) - t) - e, 0)`` (simplex) or ``sign(x) s max(((|x| - top) - t) - e, 0)`` (ball).

    ``tau`` (float64) is the threshold relative to the row's ``top``, split as ``t + e`` in the
    row's dtype. For values in the support ``x - top`` is exact (Sterbenz), and each later
    rounding is relative to the output entry: a large common offset costs nothing, and the
    rounding of the threshold (of the size of ``r``) does not shift the whole support.
    ``s``: ``scale`` (:func:`_scale`; 1 leaves the values as they are). ``inside``: a ball row
    inside the ball, copied unchanged. Returns False if the simplex row holds a NaN or an Inf
    (the ball's are found by the filter).
    """
    if ball and inside:
        for i in range(xs.shape[0]):
            out[i] = xs[i]
        return True
    m, t, e = _split(top, tau, xs)
    zero = m - m
    if ball:
        for i in range(xs.shape[0]):
            v = xs[i]
            out[i] = np.copysign(max(((abs(v) - m) - t) - e, zero) * scale, v)
        return True
    total = 0.0
    for i in range(xs.shape[0]):
        v = xs[i]
        out[i] = max(((v - m) - t) - e, zero) * scale
        total += v
    return np.isfinite(total)


@_jit
def _finish(xr, outr, top, tau, length, ball, taus, row, r):
    """Write the row's output, rescaled onto the set (:func:`_scale` over the candidates ``outr[:length]``);
    ``taus[row]`` gets the absolute threshold (0 for ball rows inside). Returns ``_write``'s flag."""
    if ball:
        tau = max(tau, -top)  # tau >= 0
    absolute = top + tau
    inside = ball and not absolute > 0.0
    taus[row] = 0.0 if inside else absolute
    scale = outr.dtype.type(1) if inside else _scale(outr, length, top, tau, r, ball)
    return _write(xr, outr, top, tau, ball, inside, scale)


@_jit
def _project_rows(x, xi, radius, ball, out, taus):
    """Project each row of the 2-d ``x`` (rows C-contiguous) into ``out``; ``xi``: integer view of ``x``.

    ``taus`` (float64) receives the thresholds. Returns how many rows hold a NaN or an Inf.
    """
    maxima = np.empty(x.shape[1] // _BLOCK + 2, x.dtype)
    keys = maxima.view(xi.dtype)
    bad = 0
    for row in range(x.shape[0]):
        xr = x[row]
        outr = out[row]
        r = np.float64(radius[row])
        # whole_row=ball: it only matters for the ball, and a literal True would compile twice
        if x.shape[1] <= _BLOCK:  # called directly: through _filter it costs ~100 ns more a row
            rho, length, finite, inside, top = _short_filter(xr, ball, r, outr, ball)
        else:
            rho, length, finite, inside, top = _filter(xr, xi[row], ball, r, outr, maxima, keys, ball)
        if not finite:
            taus[row] = 0.0
            _write(xr, outr, 0.0, 0.0, ball, True, outr.dtype.type(1))
            bad += 1
            continue
        if inside:
            tau, length = -top, 0
        else:
            tau, length = _newton(outr, length, r, rho, _STEPS_BEFORE_COMPACTING, top)
        bad += not _finish(xr, outr, top, tau, length, ball, taus, row, r)
    return bad


@intrinsic
def _fetch_add(typingctx, counter, increment):
    """``counter[0] += increment`` atomically (``counter``: a 1-d int64 array shared by threads); returns the old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", array.data, args[1], "monotonic")  # only the claim is ordered

    return types.int64(counter, types.int64), codegen


@_jit
def _project_claimed_rows(x, xi, radius, ball, out, taus, counter, chunk):
    """:func:`_project_rows` on chunks of ``chunk`` rows claimed from the shared ``counter`` until none is left.

    Every thread of a call runs this: a thread that starts late, or shares its core, claims fewer chunks,
    and each row is projected by the same code whichever thread claims it. Returns the rows with a NaN or an Inf.
    """
    rows = x.shape[0]
    bad = 0
    while True:
        start = _fetch_add(counter, chunk)
        if start >= rows:
            return bad
        stop = min(rows, start + chunk)
        bad += _project_rows(x[start:stop], xi[start:stop], radius[start:stop], ball, out[start:stop], taus[start:stop])


@_jit
def _filter_segment(xs, xi, r, ball, aux, whole_row):
    """Candidates of one segment of a long row, left at ``aux[:length]``; returns ``(rho, length, finite, top)``.

    ``whole_row`` is False (an argument, so that numba compiles no separate literal version).
    """
    maxima = np.empty(xs.shape[0] // _BLOCK + 2, xs.dtype)
    rho, length, finite, _, top = _filter(xs, xi, ball, r, aux, maxima, maxima.view(xi.dtype), whole_row)
    return rho, length, finite, top


@_jit
def _merge_segments(r, outr, starts, lengths, rho, top):
    """Gather the segments' candidates at the front of ``outr``; return the row's threshold relative to ``top``
    and how many candidates are left there (:func:`_newton`).

    ``top``: the row's largest value; ``rho``: the largest of the segments' lower bounds,
    relative to ``top``; every value above it is a candidate.
    """
    total = 0
    for part in range(starts.shape[0]):
        start = starts[part]
        for j in range(lengths[part]):
            outr[total + j] = outr[start + j]
        total += lengths[part]
    return _newton(outr, total, r, rho, _STEPS_BEFORE_COMPACTING, top)


@_jit
def _finish_segment(xs, out, top, tau, ball, scale):
    """Write one segment of a long row (threshold relative to the row's ``top``, already at least ``-top`` for
    the ball; ``scale`` of :func:`_scale`); returns :func:`_write`'s flag."""
    return _write(xs, out, top, tau, ball, ball and not top + tau > 0.0, scale)


def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's worker threads (started lazily, at least ``threads`` of them)."""
    global _POOL
    pid = os.getpid()
    if _POOL is None or _POOL[0] != pid or _POOL[1] < threads:
        if _POOL is not None and _POOL[0] == pid:
            _POOL[2].shutdown(wait=False)
        # (a pool inherited through fork() has no live workers: it is replaced, not reused)
        workers = max(threads, os.cpu_count() or 1)
        _POOL = (pid, workers, ThreadPoolExecutor(workers, thread_name_prefix="constrain-proj"))
    return _POOL[2]


_POOL: tuple | None = None

_INT_VIEW = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def project_rows(x: np.ndarray, radius: np.ndarray, ball: bool, out: np.ndarray, taus: np.ndarray, threads: int) -> int:
    """Project the rows of ``x`` (2-d, C-contiguous, float32 or float64) into ``out``.

    ``radius`` (rows,): positive, ``x``'s dtype. ``taus`` (rows,), float64, receives each row's
    threshold (0 for ball rows inside the ball; > 0 for ball rows outside). ``threads``: how many threads may work on it (the
    kernels release the GIL). Returns how many rows hold a NaN or an Inf (their output is
    garbage).
    """
    rows, n = x.shape
    if rows == 0 or n == 0:
        return 0
    xi = x.view(_INT_VIEW[x.dtype])
    threads = max(1, min(threads, (rows * n) // _MIN_WORK))
    if threads == 1:
        return _project_rows(x, xi, radius, ball, out, taus)
    if rows >= threads:
        # chunks of rows claimed from a shared counter: the calling thread starts at once, the others join as they
        # wake, and a thread slowed by its core (another process, a spinning OpenMP thread) claims less
        counter = np.zeros(1, dtype=np.int64)
        chunk = max(1, _CHUNK_VALUES // n)
        pool = _pool(threads - 1)
        jobs = [pool.submit(_project_claimed_rows, x, xi, radius, ball, out, taus, counter, chunk) for _ in range(threads - 1)]
        bad = _project_claimed_rows(x, xi, radius, ball, out, taus, counter, chunk)
        # a job that has not started when every row is done is dropped: nothing left to claim
        return bad + sum(job.result() for job in jobs if not job.cancel())
    return _project_long_rows(x, xi, radius, ball, out, taus, threads)


def _project_long_rows(x, xi, radius, ball, out, taus, threads):
    """Few long rows: filter each in segments in parallel, merge the candidates, write in parallel."""
    rows, n = x.shape
    parts = -(-threads // rows)
    starts = np.linspace(0, n, parts + 1).astype(np.int64)
    segments = [(row, a, b) for row in range(rows) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    pool = _pool(threads)
    jobs = [
        pool.submit(_filter_segment, x[row, a:b], xi[row, a:b], float(radius[row]), ball, out[row, a:b], False)
        for row, a, b in segments
    ]
    found = [job.result() for job in jobs]
    bad = np.zeros(rows, dtype=np.bool_)
    tops = np.zeros(rows)
    scales = np.ones(rows, dtype=x.dtype)
    for row in range(rows):
        mine = found[row * parts : (row + 1) * parts]
        bad[row] = not all(finite for _, _, finite, _ in mine)
        if bad[row]:
            taus[row] = 0
            continue
        top = max(seg_top for _, _, _, seg_top in mine)
        # each segment's bound, moved to the row's top (an ulp lower, for the rounding of the move)
        rho = max(np.nextafter((seg_top - top) + seg_rho, -np.inf) for seg_rho, _, _, seg_top in mine)
        rho = min(rho, -5e-324)
        lengths = np.array([length for _, length, _, _ in mine], dtype=np.int64)
        tau, length = _merge_segments(float(radius[row]), out[row], starts[:-1], lengths, rho, top)
        if ball:
            tau = max(tau, -top)
        if not (ball and not top + tau > 0.0):  # (ball rows inside are copied)
            scales[row] = _scale(out[row], length, top, tau, float(radius[row]), ball)
        tops[row], taus[row] = top, tau  # taus holds the relative threshold until the writes are done
    _write_segments(x, ball, out, taus, pool, segments, bad, tops, scales)
    return int(bad.sum())


def _write_segments(x, ball, out, taus, pool, segments, bad, tops, scales):
    """Write the long rows' segments in parallel (scaled onto the set by ``scales``), and make ``taus`` absolute.

    ``taus`` holds the thresholds relative to ``tops`` on entry; rows found non-finite are marked in ``bad``.
    """
    good = [seg for seg in segments if not bad[seg[0]]]
    writes = [
        pool.submit(_finish_segment, x[row, a:b], out[row, a:b], tops[row], float(taus[row]), ball, scales[row])
        for row, a, b in good
    ]
    for (row, _, _), job in zip(good, writes, strict=True):
        bad[row] |= not job.result()
    for row in range(x.shape[0]):
        if not bad[row]:
            absolute = tops[row] + taus[row]
            taus[row] = 0.0 if ball and not absolute > 0.0 else absolute
