"""Bradley-Terry ratings: which models can be rated, the maximum-likelihood fit and its bootstrap.

P(i beats j) = sigmoid(theta_i - theta_j), ties counting as half a win each, no penalty, as in
Chatbot Arena. The maximum exists only when the graph with an edge from each model to every
model that won or tied against it is strongly connected (Zermelo, Ford), so models outside the
largest such group are reported as unrated, with the reason, instead of getting the arbitrary
large numbers an optimiser stops at. A bootstrap resample that breaks the group gives the
models that won (lost) every battle +inf (-inf) for that round, and NaN to those it leaves
without comparable battles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components

from arena.ratings.aggregate import A_WON, TIE, PairCounts
from arena.ratings.bootstrap import CountResampler, Progress, round_generators
from arena.ratings.logistic import Design, chord, hessian, newton

POINTS_PER_UNIT = 400.0 / math.log(10.0)
"""Rating points per unit of natural-log strength: 400 points per factor of 10 in odds."""
BASE_RATING = 1000.0
_ELEMENTS_PER_CHUNK = 1_000_000
"""Bounds the (cells x rounds) arrays of one batch of bootstrap rounds, hence the memory."""


class Standing(StrEnum):
    """Why a model has, or has not, a finite rating."""

    RATED = "rated"
    UNBOUNDED_ABOVE = "never lost or tied against the rated models (rating unbounded above)"
    UNBOUNDED_BELOW = "never won or tied against the rated models (rating unbounded below)"
    NOT_COMPARABLE = "no chain of wins and losses both ways to the rated models"
    NOT_CONNECTED = "never met any rated model, directly or through others"
    NO_BATTLES = "no battles against another model"
    NO_GROUP = "no two models have both won (or tied) and lost against each other yet"


@dataclass(frozen=True)
class Groups:
    """Where each model stands relative to the largest strongly connected group ("main")."""

    main: np.ndarray
    above: np.ndarray
    below: np.ndarray
    connected: np.ndarray
    active: np.ndarray


@dataclass(frozen=True)
class BradleyTerryFit:
    """The full-data fit: natural-log strengths, mean zero over the rated models."""

    strength: np.ndarray
    """Per model; NaN for unrated models."""
    standing: tuple[Standing, ...]

    @property
    def rated(self) -> np.ndarray:
        return np.array([s is Standing.RATED for s in self.standing], dtype=bool)


def comparison_groups(
    n_models: int,
    i: np.ndarray,
    j: np.ndarray,
    i_scored: np.ndarray,
    j_scored: np.ndarray,
    battles: np.ndarray,
) -> Groups:
    """Split models by the graph with an edge u -> v whenever v won or tied against u.

    "main" is the largest strongly connected component (then the one with most battles, then the
    lowest model index); "above" are models reachable from it but not back, "below" the reverse.
    """
    played = battles > 0
    # Edge u -> v when v scored against u.
    tail = np.concatenate([j[played & i_scored], i[played & j_scored]])
    head = np.concatenate([i[played & i_scored], j[played & j_scored]])
    graph = sp.csr_matrix((np.ones(tail.size), (tail, head)), shape=(n_models, n_models))
    _, labels = connected_components(graph, directed=True, connection="strong")
    size = np.bincount(labels)
    inside = played & (labels[i] == labels[j])
    inner_battles = np.bincount(labels[i[inside]], battles[inside], minlength=size.size)
    first_member = np.full(size.size, n_models)
    np.minimum.at(first_member, labels, np.arange(n_models))
    best = np.lexsort((first_member, -inner_battles, -size))[0]
    main = labels == best
    member = int(np.flatnonzero(main)[0])
    # Reached from main: a chain of models each scoring against the previous, never back.
    reached = np.zeros(n_models, dtype=bool)
    reached[breadth_first_order(graph, member, directed=True, return_predecessors=False)] = True
    reaching = np.zeros(n_models, dtype=bool)
    reaching[breadth_first_order(graph.T.tocsr(), member, return_predecessors=False)] = True
    _, weak = connected_components(graph, directed=True, connection="weak")
    active = np.zeros(n_models, dtype=bool)
    active[i[played]] = True
    active[j[played]] = True
    return Groups(
        main=main,
        above=reached & ~main,
        below=reaching & ~main,
        connected=weak == weak[member],
        active=active,
    )


def fit_bradley_terry(pairs: PairCounts) -> BradleyTerryFit:
    """Maximum-likelihood strengths of the largest group of models that can be rated."""
    if pairs.n_models == 0:
        return BradleyTerryFit(strength=np.zeros(0), standing=())
    total, score = pairs.total, pairs.score_i
    groups = comparison_groups(
        pairs.n_models, pairs.i, pairs.j, score > 0, total - score > 0, total
    )
    main = groups.main if groups.main.sum() >= 2 else np.zeros(pairs.n_models, dtype=bool)
    strength = np.full(pairs.n_models, np.nan)
    if main.any():
        sub, members = pairs.restrict(main)
        design = Design(sub.i, sub.j, sub.n_models)
        fitted, ok = newton(design, sub.score_i, sub.total, np.zeros(sub.n_models))
        if not ok:
            raise RuntimeError("the Bradley-Terry fit did not converge")
        strength[members] = fitted
    return BradleyTerryFit(strength=strength, standing=_standings(groups, main))


def bootstrap_bradley_terry(
    pairs: PairCounts,
    fit: BradleyTerryFit,
    rounds: int,
    seed: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """Strengths refitted on ``rounds`` multinomial resamples of the rated models' battles.

    Returns (rounds, n_models), NaN in unrated columns. Round r depends only on ``seed`` and r.
    """
    samples = np.full((rounds, pairs.n_models), np.nan)
    rated = fit.rated
    if rounds == 0 or not rated.any():
        return samples
    sub, members = pairs.restrict(rated)
    design = Design(sub.i, sub.j, sub.n_models)
    start = fit.strength[members]
    inverse = np.linalg.inv(hessian(design, start, sub.total.astype(float)))
    cell_pair, cell_kind = np.nonzero(sub.counts)
    resampler = CountResampler(sub.counts[cell_pair, cell_kind])
    shape = (sub.i.size, cell_pair.size)
    cells = np.arange(cell_pair.size)
    to_total = sp.csr_matrix((np.ones(cells.size), (cell_pair, cells)), shape)
    kind_score = np.where(cell_kind == A_WON, 1.0, np.where(cell_kind == TIE, 0.5, 0.0))
    to_score = sp.csr_matrix((kind_score, (cell_pair, cells)), shape)
    generators = round_generators(seed, rounds, stream=0)
    batch = int(np.clip(_ELEMENTS_PER_CHUNK // max(shape[1], shape[0], 1), 16, 256))
    for begin in range(0, rounds, batch):
        chunk = generators[begin : begin + batch]
        drawn = resampler.draw(chunk)
        strengths = _fit_resamples(sub, design, to_score @ drawn, to_total @ drawn, start, inverse)
        samples[begin : begin + len(chunk)][:, members] = strengths.T
        if progress is not None:
            progress(len(chunk))
    return samples


def _fit_resamples(
    pairs: PairCounts,
    design: Design,
    score: np.ndarray,
    total: np.ndarray,
    start: np.ndarray,
    inverse: np.ndarray,
) -> np.ndarray:
    """Strengths (models x rounds) for a batch of resamples given per pair (pairs x rounds).

    Chord iterations fit the batch together; a resample where some model has no win or tie, or
    no loss or tie, has no finite maximum, so it goes straight to the exact per-round path, as
    does any round the chord iterations did not settle.
    """
    i_scored, j_scored = (score > 0).astype(float), (total - score > 0).astype(float)
    first_of = (design.difference_t > 0).astype(float)
    second_of = (design.difference_t < 0).astype(float)
    scored = first_of @ i_scored + second_of @ j_scored
    conceded = first_of @ j_scored + second_of @ i_scored
    regular = np.flatnonzero(~((scored == 0) | (conceded == 0)).any(axis=0))
    if regular.size == score.shape[1]:
        fitted, ok = chord(design, score, total, start, inverse)
    else:
        fitted, ok = chord(
            design,
            np.ascontiguousarray(score[:, regular]),
            np.ascontiguousarray(total[:, regular]),
            start,
            inverse,
        )
    strengths = np.empty((pairs.n_models, score.shape[1]))
    strengths[:, regular] = fitted
    exact = np.setdiff1d(np.arange(score.shape[1]), regular[ok])
    for col in exact:
        strengths[:, col] = _fit_resample(pairs, score[:, col], total[:, col], start)
    return strengths


def to_rating(strength: np.ndarray) -> np.ndarray:
    """Natural-log strengths on the Elo-like scale: 400 points per factor of 10, mean 1000."""
    return BASE_RATING + POINTS_PER_UNIT * strength


def _fit_resample(
    pairs: PairCounts, score: np.ndarray, total: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """One resample fitted exactly, with infinities where its comparison graph breaks.

    The finite models keep the full fit's mean, so rounds stay on one reference. When no two
    models are strongly connected there is no finite reference: models that never conceded get
    +inf, models that never scored -inf, the rest NaN (so two models give mirrored bounds).
    """
    i_scored, j_scored = score > 0, total - score > 0
    groups = comparison_groups(pairs.n_models, pairs.i, pairs.j, i_scored, j_scored, total)
    out = np.full(pairs.n_models, np.nan)
    main = groups.main
    if main.sum() == 1:
        m = pairs.n_models
        scored = np.bincount(pairs.i, i_scored, m) + np.bincount(pairs.j, j_scored, m) > 0
        conceded = np.bincount(pairs.i, j_scored, m) + np.bincount(pairs.j, i_scored, m) > 0
        out[scored & ~conceded] = np.inf
        out[conceded & ~scored] = -np.inf
        return out
    out[groups.above] = np.inf
    out[groups.below] = -np.inf
    rows = main[pairs.i] & main[pairs.j] & (total > 0)
    local = np.cumsum(main) - 1
    design = Design(local[pairs.i[rows]], local[pairs.j[rows]], int(main.sum()))
    reference = start[main].mean()
    fitted, ok = newton(design, score[rows], total[rows], start[main] - reference)
    if not ok:
        raise RuntimeError("a bootstrap Bradley-Terry fit did not converge")
    out[main] = fitted + reference
    return out


def _standings(groups: Groups, main: np.ndarray) -> tuple[Standing, ...]:
    out = []
    for m in range(main.size):
        if main[m]:
            out.append(Standing.RATED)
        elif not groups.active[m]:
            out.append(Standing.NO_BATTLES)
        elif not main.any():
            out.append(Standing.NO_GROUP)
        elif not groups.connected[m]:
            out.append(Standing.NOT_CONNECTED)
        elif groups.above[m]:
            out.append(Standing.UNBOUNDED_ABOVE)
        elif groups.below[m]:
            out.append(Standing.UNBOUNDED_BELOW)
        else:
            out.append(Standing.NOT_COMPARABLE)
    return tuple(out)
