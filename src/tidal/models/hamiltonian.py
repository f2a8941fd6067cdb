r"""`HamiltonianNN`: a learned energy H(q, p) whose flow is the model's dynamics.

$$ \frac{dq}{dt} = \frac{\partial H}{\partial p}, \qquad
   \frac{dp}{dt} = -\frac{\partial H}{\partial q}, $$

with the gradient taken by autograd (with `create_graph` while training, so the loss reaches
H's weights). The state's last dimension holds (q, p) in two equal halves. Integrated with a
symplectic method (`tidal.Leapfrog` for a separable H = T(p) + V(q), else
`tidal.ImplicitMidpoint`), the model keeps its own energy within a bounded band over very long
runs, where a plain `NeuralODE` lets it drift.

Greydanus, Dzamba & Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019; Zhong, Dey &
Chakraborty, "Symplectic ODE-Net", ICLR 2020 (separable H with a symplectic integrator).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tidal import defaults
from tidal._errors import IncompatibleOptionsError, InvalidArgumentError
from tidal.adjoint.base import Adjoint
from tidal.controllers import ConstantStepSize
from tidal.controllers.base import StepSizeController
from tidal.models.neural_ode import (
    NeuralODE,
    build_network,
    network_config,
    network_size,
    solve_options,
)
from tidal.nn import MLP
from tidal.solvers import FixedStepMethod, ImplicitMidpoint, Leapfrog
from tidal.solvers.base import StepMethod


class HamiltonianField(nn.Module):
    """The vector field (dH/dp, -dH/dq) of an energy network, called as `f(t, y)`.

    Give either `hamiltonian` (H on the whole state) or both `kinetic` (T on p) and `potential`
    (V on q), for H = T(p) + V(q). Each network is called as `net(t, x)` (as `tidal.nn.MLP`
    is) and returns [..., 1] (or [...]); it must be smooth (tanh, softplus, silu), since its
    gradient is the vector field. A network that ignores t gives a conserved energy.
    """

    def __init__(self, hamiltonian: nn.Module | None = None, *,
                 kinetic: nn.Module | None = None, potential: nn.Module | None = None) -> None:
        super().__init__()
        separable = kinetic is not None or potential is not None
        if separable == (hamiltonian is not None) or (separable and (kinetic is None
                                                                     or potential is None)):
            raise InvalidArgumentError(
                "`HamiltonianNN(...)` takes either `hamiltonian=H` (a network for H(q, p) on "
                "the whole state) or both `kinetic=T` and `potential=V` (H = T(p) + V(q)).")
        self.hamiltonian, self.kinetic, self.potential = hamiltonian, kinetic, potential

    @property
    def separable(self) -> bool:
        return self.hamiltonian is None

    def energy(self, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        """H(t, q, p) for states y [..., 2n]; returns [...]."""
        if y.shape[-1] % 2:
            raise InvalidArgumentError(
                f"A Hamiltonian model's state holds (q, p) in two equal halves of its last "
                f"dimension; got a last dimension of {y.shape[-1]}.")
        if self.hamiltonian is not None:
            value = self.hamiltonian(t, y)
        else:
            assert self.kinetic is not None and self.potential is not None
            n = y.shape[-1] // 2
            value = self.kinetic(t, y[..., n:]) + self.potential(t, y[..., :n])
        return value.squeeze(-1) if value.dim() == y.dim() and value.shape[-1] == 1 else value

    def forward(self, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        """(dH/dp, -dH/dq) at states y [..., 2n]. Records second-order graphs only when the
        caller records a graph (training); works under `torch.no_grad()` too."""
        record = torch.is_grad_enabled()
        with torch.enable_grad():
            x = y if y.requires_grad else y.detach().requires_grad_(True)
            energy = self.energy(t, x).sum()
            (grad,) = torch.autograd.grad(energy, x, create_graph=record, allow_unused=True)
        if grad is None:  # H does not depend on the state
            grad = torch.zeros_like(y)
        n = y.shape[-1] // 2
        return torch.cat([grad[..., n:], -grad[..., :n]], dim=-1)


class HamiltonianNN(NeuralODE):
    """A `NeuralODE` whose vector field is the Hamiltonian flow of a learned energy.

    Args:
        hamiltonian: a network for H(q, p) on the whole state [..., 2n] (called `H(t, y)`,
            returning [..., 1]); or
        kinetic, potential: networks for T(p) and V(q) on [..., n] each: H = T(p) + V(q), a
            separable energy, which the explicit symplectic methods need.
        solver: default `Leapfrog()` for a separable H (two calls of the field per step),
            `ImplicitMidpoint()` otherwise (symplectic for every H, but about ten calls per
            step). An adaptive method such as `tidal.Dopri5()` also works (with the models'
            default `PIDController`); it does not conserve energy over long runs.
        controller: for a fixed-step solver, default `ConstantStepSize(0.1)`
            (`tidal.defaults.HAMILTONIAN_DT`, in the model's time units); the energy is
            conserved to O(dt^2) (Leapfrog) or O(dt^4) (Yoshida4). 0.1 is about 60 steps per
            period of an oscillation of period 2 pi; take dt well below the shortest period.
        adjoint, max_steps: as for `NeuralODE`. `CheckpointAdjoint` and `BackpropAdjoint`
            give the exact gradient of the symplectic steps; `BacksolveAdjoint` cannot
            integrate its backward ODE with a splitting (an error says so).

    `model(y0, ts)` returns trajectories [T, *y0.shape]; `model.energy(y)` the learned H.

    Example:
        >>> model = HamiltonianNN.mlp(1, separable=True, width=32)   # pendulum: q, p
        >>> ys = model(torch.tensor([[1.0, 0.0]]), torch.linspace(0, 10, 101))
    """

    vector_field: HamiltonianField

    def __init__(self, hamiltonian: nn.Module | None = None, *,
                 kinetic: nn.Module | None = None, potential: nn.Module | None = None,
                 solver: StepMethod | None = None,
                 controller: StepSizeController | None = None, adjoint: Adjoint | None = None,
                 max_steps: int = defaults.MAX_STEPS) -> None:
        field = HamiltonianField(hamiltonian, kinetic=kinetic, potential=potential)
        if solver is None:
            solver = Leapfrog() if field.separable else ImplicitMidpoint()
        if isinstance(solver, FixedStepMethod) and solver.splits_state and not field.separable:
            raise IncompatibleOptionsError(
                f"`HamiltonianNN(hamiltonian=..., solver={solver!r})`: an explicit splitting "
                "needs a separable H = T(p) + V(q); pass kinetic= and potential= instead, or "
                "use solver=tidal.ImplicitMidpoint() (symplectic for every H).")
        if controller is None and isinstance(solver, StepMethod) and not solver.adaptive:
            controller = ConstantStepSize(defaults.HAMILTONIAN_DT)
        super().__init__(field, solver=solver, controller=controller, adjoint=adjoint,
                         max_steps=max_steps)

    @classmethod
    def mlp(cls, degrees_of_freedom: int, *, separable: bool = False, width: int = 64,
            depth: int = 2, activation: str = "tanh", **options: Any) -> HamiltonianNN:
        """A HamiltonianNN whose energy networks are `tidal.nn.MLP`s: one on the 2n-dimensional
        state, or with `separable=True` one for T(p) and one for V(q) on n dimensions each.
        `options` go to the constructor (solver, controller, adjoint, ...)."""
        def net(size: int) -> MLP:
            return MLP(size, 1, width=width, depth=depth, activation=activation)

        n = degrees_of_freedom
        if separable:
            return cls(kinetic=net(n), potential=net(n), **options)
        return cls(net(2 * n), **options)

    @property
    def separable(self) -> bool:
        return self.vector_field.separable

    def state_size(self) -> int | None:
        """2n, from the energy networks' declared sizes (n each for T and V), else None."""
        field = self.vector_field
        if field.hamiltonian is not None:
            return network_size(field.hamiltonian)
        size = network_size(field.potential)
        return None if size is None else 2 * size

    def energy(self, y: torch.Tensor, t: torch.Tensor | float = 0.0) -> torch.Tensor:
        """The learned energy H(q, p) of states y [..., 2n]; returns [...]."""
        return self.vector_field.energy(t, y)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (with `from_config`), as plain JSON values.
        The energy networks must be registered vector fields (`tidal.nn.MLP`)."""
        parts = {part: network_config(net, f"`HamiltonianNN.config()`: the {part} network")
                 for part in ("hamiltonian", "kinetic", "potential")
                 if (net := getattr(self.vector_field, part)) is not None}
        return {"type": "HamiltonianNN", **parts, **self._solve_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HamiltonianNN:
        """Rebuild a model from `config()`; only registered classes are constructed."""
        nets = {part: build_network(config[part]) if part in config else None
                for part in ("hamiltonian", "kinetic", "potential")}
        return cls(nets["hamiltonian"], kinetic=nets["kinetic"], potential=nets["potential"],
                   **solve_options(config))
