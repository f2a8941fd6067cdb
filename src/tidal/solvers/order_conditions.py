r"""Order conditions of Runge–Kutta and Rosenbrock methods from rooted trees (Butcher series).

A method with stage weights b reproduces the Taylor series of the exact solution up to
h^p when, for every rooted tree t with at most p vertices,

    sum_j b_j Phi_j(t) = 1 / gamma(t)

where gamma(t) is the tree's density and Phi_j(t) its elementary weight at stage j. A tree is
written here as the sorted tuple of its root's subtrees (`()` is the single vertex). For a
Runge–Kutta method with coefficients a,

    Phi(())            = 1                       (a vector over the stages)
    Phi((t_1,...,t_m)) = prod_k (a @ Phi(t_k))   (elementwise product)

A Rosenbrock method (Hairer & Wanner II, Sec. IV.7, Table 7.1) has two coefficient matrices: the
strictly lower alpha (where f is evaluated) and beta = alpha + Gamma (Gamma lower triangular
with gamma on the diagonal, the coefficients of the Jacobian terms). A vertex with exactly one
child is linear in f' and uses beta; a vertex with two or more children uses alpha. With
`single=alpha` the two rules coincide and give the Runge–Kutta conditions.

Dense output of order q: the weights b(theta) must satisfy the same conditions with
theta^|t| / gamma(t) on the right, for every tree with at most q vertices.

Hairer, Nørsett & Wanner, Solving ODEs I, Sec. II.2; Hairer & Wanner, Solving ODEs II, Sec. IV.7.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from functools import cache

import numpy as np

Tree = tuple  # a rooted tree: the sorted tuple of its root's subtrees


@cache
def trees(order: int) -> tuple[Tree, ...]:
    """All rooted trees with `order` vertices (1, 1, 2, 4, 9, 20, 48, ... of them)."""
    if order == 1:
        return ((),)
    found = set()
    for sizes in _partitions(order - 1, order - 1):
        for children in itertools.product(*(trees(size) for size in sizes)):
            found.add(tuple(sorted(children)))
    return tuple(sorted(found))


def _partitions(total: int, largest: int) -> Iterator[list[int]]:
    """Partitions of `total` into non-increasing parts of at most `largest`."""
    if total == 0:
        yield []
        return
    for part in range(min(total, largest), 0, -1):
        for rest in _partitions(total - part, part):
            yield [part, *rest]


def tree_order(tree: Tree) -> int:
    return 1 + sum(tree_order(child) for child in tree)


def density(tree: Tree) -> int:
    """gamma(t): the tree's order times the densities of its subtrees."""
    return tree_order(tree) * math.prod(density(child) for child in tree)


def elementary_weights(tree: Tree, alpha: np.ndarray, single: np.ndarray) -> np.ndarray:
    """Phi_j(t) for every stage j; `single` is the matrix used at vertices with one child."""
    if not tree:
        return np.ones(alpha.shape[0])
    if len(tree) == 1:
        return single @ elementary_weights(tree[0], alpha, single)
    return np.prod([alpha @ elementary_weights(child, alpha, single) for child in tree], axis=0)


def order_residuals(b: np.ndarray, alpha: np.ndarray, single: np.ndarray, order: int,
                    theta: float = 1.0) -> list[tuple[Tree, float]]:
    """(tree, b . Phi(t) - theta^|t| / gamma(t)) for every tree with at most `order` vertices."""
    return [(tree, float(b @ elementary_weights(tree, alpha, single))
             - theta ** n / density(tree))
            for n in range(1, order + 1) for tree in trees(n)]


def first_violation(b: np.ndarray, alpha: np.ndarray, single: np.ndarray, order: int,
                    tol: float, theta: float = 1.0) -> tuple[Tree, float] | None:
    """The first tree whose condition fails by more than `tol`, or None if all hold."""
    for tree, residual in order_residuals(b, alpha, single, order, theta):
        if abs(residual) > tol:
            return tree, residual
    return None


def achieved_order(b: np.ndarray, alpha: np.ndarray, single: np.ndarray, tol: float,
                   limit: int = 8) -> int:
    """The largest p <= limit such that every condition up to order p holds."""
    for p in range(1, limit + 1):
        if first_violation(b, alpha, single, p, tol) is not None:
            return p - 1
    return limit


def stability_function(z: complex | np.ndarray, b: np.ndarray, matrix: np.ndarray
                       ) -> np.ndarray:
    """R(z) = 1 + z b^T (I - z M)^{-1} 1: one step of the method on y' = lambda y, z = h lambda.

    M is the Runge–Kutta matrix a, or beta = alpha + Gamma for a Rosenbrock method (whose
    stability function depends on alpha and Gamma only through their sum)."""
    zs = np.atleast_1d(np.asarray(z, dtype=complex))
    s = len(b)
    ones = np.ones(s)
    return np.array([1 + zi * (b @ np.linalg.solve(np.eye(s) - zi * matrix, ones))
                     for zi in zs])
