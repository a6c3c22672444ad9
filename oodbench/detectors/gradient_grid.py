"""Input-perturbation grids at the price of forwards.

ODIN (Liang et al. 2018, Eq. 2) and Lee et al. (2018, Eq. 4) perturb an input with one signed-gradient step,
x̃ = x − ε · sign(∇ₓ L(x)), where the gradient is taken at the *unperturbed* x. For a fixed loss L (ODIN: a
fixed temperature T; Mahalanobis: a fixed layer l) the sign is therefore the same for every ε: one backward per
image serves the whole ε grid, and each ε then costs one forward. :func:`signed_gradient` computes that sign,
:func:`grid_scores` evaluates a score on every ε from it. Both the tuned detectors and the plain ODIN /
Mahalanobis ensemble take their step through :func:`step`, so the shared-gradient path is the naive one by
construction (tests compare them anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor


def signed_gradient(loss: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """sign(∇ₓ loss(x)) as int8 (−1, 0, +1), one backward; ``loss`` maps a batch to a scalar."""
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(xg), xg)
    return grad.sign().to(torch.int8)


def step(x: Tensor, signs: Tensor, epsilon: float) -> Tensor:
    """x − ε · signs: the perturbed input (pixel space; the models normalize inside, so this is the official
    step ε / std in normalized space)."""
    return (x.detach() - epsilon * signs.to(x.dtype)).detach()


def grid_scores(score: Callable[[Tensor], Tensor], x: Tensor, signs: Tensor, epsilons: Sequence[float]) -> Tensor:
    """(len(epsilons), N) scores of ``score`` at x − ε · signs for every ε (no gradients; ε = 0 is x itself)."""
    with torch.no_grad():
        return torch.stack([score(step(x, signs, eps) if eps else x.detach()) for eps in epsilons])


def stack_batches(parts: Iterable[Tensor], dim: int = -1) -> Tensor:
    """Concatenate per-batch grid outputs along the image dimension (last by default)."""
    return torch.cat(list(parts), dim=dim)
