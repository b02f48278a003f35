"""Weighted logistic fits behind every rating: Newton for one data set, chord steps for many.

Each row compares a first and a second model, with optional features x: the first wins with
probability sigmoid(theta[first] - theta[second] + x . beta). A data set gives per row a score S
(wins plus half the ties, from the first's side) out of N battles; the log-likelihood is
sum(S * eta - N * log(1 + exp(eta))) minus an optional L2 penalty. Without a penalty on theta the
fit is only defined up to a shift, so theta is kept at mean zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

_SMALL = 200
"""Largest parameter count whose chord products skip BLAS (see ``_product``)."""


@dataclass(frozen=True)
class Design:
    """Who meets whom in each row, the row features, and the penalty per parameter."""

    first: np.ndarray
    second: np.ndarray
    n_models: int
    features: np.ndarray | None = None
    ridge: np.ndarray | None = None
    """L2 weight per parameter (models, then features); None fits without a penalty."""

    @property
    def n_params(self) -> int:
        return self.n_models + (0 if self.features is None else self.features.shape[1])

    @cached_property
    def difference(self) -> sp.csr_matrix:
        """(rows, models): +1 at the first model, -1 at the second."""
        rows = np.arange(self.first.size)
        data = np.concatenate([np.ones(rows.size), -np.ones(rows.size)])
        index = (np.concatenate([rows, rows]), np.concatenate([self.first, self.second]))
        return sp.csr_matrix((data, index), shape=(rows.size, self.n_models))

    @cached_property
    def difference_t(self) -> sp.csr_matrix:
        return self.difference.T.tocsr()


def linear_predictor(
    design: Design, params: np.ndarray, work: np.ndarray | None = None
) -> np.ndarray:
    """eta per row, for params of shape (n_params,) or (n_params, rounds).

    ``work``, two arrays shaped like eta, is used instead of fresh memory: the bootstrap's
    arrays are tens of MB, and the page faults of allocating them anew each step cost more
    than the arithmetic.
    """
    m = design.n_models
    shape = (design.first.size, *params.shape[1:])
    eta, spare = (np.empty(shape), np.empty(shape)) if work is None else work
    # Gathering rows of the small parameter matrix beats a sparse product here.
    np.take(params[:m], design.first, axis=0, out=eta, mode="clip")
    eta -= np.take(params[:m], design.second, axis=0, out=spare, mode="clip")
    if design.features is not None:
        eta += np.matmul(design.features, params[m:], out=spare)
    return eta


def gradient(
    design: Design,
    params: np.ndarray,
    score: np.ndarray,
    n: np.ndarray,
    work: np.ndarray | None = None,
) -> np.ndarray:
    """Gradient of the penalised log-likelihood; columns are independent data sets."""
    residual = _sigmoid_in_place(linear_predictor(design, params, work))
    residual *= n
    np.subtract(score, residual, out=residual)
    parts = [design.difference_t @ residual]
    if design.features is not None:
        parts.append(design.features.T @ residual)
    grad = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if design.ridge is not None:
        grad -= design.ridge.reshape((-1,) + (1,) * (params.ndim - 1)) * params
    return grad


def hessian(design: Design, params: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Negative Hessian (n_params x n_params) for one data set, pinned when unpenalised.

    Unpenalised, the model block is a graph Laplacian (singular along a uniform shift); adding
    a multiple of the all-ones matrix makes it invertible without changing steps whose gradient
    sums to zero, which every Bradley-Terry gradient does.
    """
    p = expit(linear_predictor(design, params))
    weight = n * p * (1.0 - p)
    m = design.n_models
    out = np.zeros((design.n_params, design.n_params))
    diff = design.difference
    out[:m, :m] = (design.difference_t @ diff.multiply(weight[:, None])).toarray()
    if design.features is not None:
        weighted = design.features * weight[:, None]
        out[:m, m:] = design.difference_t @ weighted
        out[m:, :m] = out[:m, m:].T
        out[m:, m:] = design.features.T @ weighted
    if design.ridge is None:
        out[:m, :m] += max(np.trace(out[:m, :m]), 1.0) / m**2
    else:
        out[np.diag_indices_from(out)] += design.ridge
    return out


def log_likelihood(design: Design, params: np.ndarray, score: np.ndarray, n: np.ndarray) -> float:
    eta = linear_predictor(design, params)
    value = float(np.sum(score * eta - n * np.logaddexp(0.0, eta)))
    if design.ridge is not None:
        value -= 0.5 * float(np.sum(design.ridge * params**2))
    return value


def newton(
    design: Design,
    score: np.ndarray,
    n: np.ndarray,
    start: np.ndarray,
    *,
    tol: float = 1e-10,
    max_iter: int = 200,
) -> tuple[np.ndarray, bool]:
    """Maximum-likelihood parameters for one data set, by Newton steps with backtracking.

    The caller guarantees the maximum exists (a strongly connected comparison graph, or a
    penalty). Returns the parameters and whether the last step was below ``tol``.
    """
    params = start.astype(float).copy()
    current = log_likelihood(design, params, score, n)
    for _ in range(max_iter):
        grad = gradient(design, params, score, n)
        step = np.linalg.solve(hessian(design, params, n), grad)
        slope = float(grad @ step)
        size = 1.0
        while True:
            candidate = params + size * step
            value = log_likelihood(design, candidate, score, n)
            if value >= current + 1e-4 * size * slope or size < 1e-10:
                break
            size /= 2
        params, current = candidate, value
        if np.abs(size * step).max(initial=0.0) < tol:
            return _centred(design, params), True
    return _centred(design, params), False


def chord(
    design: Design,
    score: np.ndarray,
    n: np.ndarray,
    start: np.ndarray,
    inverse_hessian: np.ndarray,
    *,
    tol: float = 1e-7,
    max_iter: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit many data sets at once (columns of ``score`` and ``n``) by chord iterations.

    Each step is the Newton step with the Hessian fixed at the full-data fit: bootstrap data
    sets are small perturbations of the full data, so this converges linearly at a fast rate,
    and one inverse serves every round. Stops a column once its step is below ``tol`` (1e-7
    natural-log units is 2e-5 rating points, far below any interval's sampling noise). Returns
    (params (n_params, rounds), converged mask); columns that did not converge within
    ``max_iter`` need a proper Newton fit.
    """
    rounds = score.shape[1]
    out = np.repeat(start[:, None], rounds, axis=1)
    converged = np.zeros(rounds, dtype=bool)
    columns = np.arange(rounds)
    params = out.copy()
    work = np.empty((2, *score.shape))
    for _ in range(max_iter):
        step = _product(inverse_hessian, gradient(design, params, score, n, work))
        params += step
        size = np.abs(step).max(axis=0)
        failed = ~np.isfinite(size)
        newly = (size < tol) & ~converged[columns]
        out[:, columns[newly]] = params[:, newly]
        converged[columns[newly]] = True
        keep = ~(failed | converged[columns])
        if not keep.any():
            break
        # Drop settled columns once they are half the batch: copying costs about one step.
        if 2 * keep.sum() <= keep.size:
            columns, params = columns[keep], np.ascontiguousarray(params[:, keep])
            score, n = np.ascontiguousarray(score[:, keep]), np.ascontiguousarray(n[:, keep])
            work = np.empty((2, *score.shape))
    return _centred(design, out), converged


def _product(matrix: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """matrix @ columns; small products skip BLAS, whose threads can stall for milliseconds
    per call when the machine is busy, which would dominate the chord iterations."""
    if matrix.shape[0] <= _SMALL:
        return np.einsum("ij,jk->ik", matrix, columns)
    return matrix @ columns


def _sigmoid_in_place(eta: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-eta)), overwriting eta: several times faster than scipy's expit on the
    bootstrap's large arrays, and exact enough (exp overflows to inf, giving 0)."""
    with np.errstate(over="ignore"):
        np.exp(np.negative(eta, out=eta), out=eta)
    eta += 1.0
    return np.reciprocal(eta, out=eta)


def _centred(design: Design, params: np.ndarray) -> np.ndarray:
    """Remove the rounding drift of the mean, which the unpenalised likelihood cannot see."""
    if design.ridge is None:
        params[: design.n_models] -= params[: design.n_models].mean(axis=0)
    return params
