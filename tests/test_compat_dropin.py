"""The torchdiffeq drop-in, complete (issue 18): callbacks, interpolation and grid options,
perturb and jump times in the state's dtype, the adjoint's edge cases and norms, the extra entry
points, Adams methods and scipy_solver. Each against torchdiffeq (installed by the test extra)
or an exact answer.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
import torchdiffeq  # a test-time reference, installed by the test extra
from scipy.integrate import solve_ivp
from torchdiffeq._impl.adjoint import handle_adjoint_norm_
from torchdiffeq._impl.misc import _mixed_norm, _rms_norm

import tidal
from tidal.compat import odeint, odeint_adjoint, odeint_dense, odeint_event

F64 = torch.float64


def pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -torch.sin(y[0]) + 0.3 * torch.cos(t)])


Y0 = torch.tensor([1.0, 0.0], dtype=F64)


class Net(torch.nn.Module):
    """A small field with parameters, counting calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 2).double()
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return torch.tanh(self.linear(y))


# ---------------------------------------------------------------------------------------------
# 1. Callbacks


class Recording(Net):
    """Net recording every callback as (name, t0, dt)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.calls: list[tuple[str, float, float]] = []
        for name in names:
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str):
        def record(t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
            self.calls.append((name, float(t0), float(dt)))
        return record

    def of(self, name: str) -> list[tuple[float, float]]:
        return [(t0, dt) for n, t0, dt in self.calls if n == name]


@pytest.mark.parametrize("reverse", [False, True])
def test_callback_step_fixed_matches_torchdiffeq(reverse: bool) -> None:
    t = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=F64)
    runs = []
    for library in (tidal, torchdiffeq):
        f = Recording(("callback_step", "callback_step_adjoint"))
        ys = library.odeint_adjoint(f, Y0.clone().requires_grad_(), t, method="rk4",
                                    options={"step_size": 0.1})
        ys.sum().backward()
        runs.append(f)
    ours, theirs = runs
    for name in ("callback_step", "callback_step_adjoint"):
        expected = theirs.of(name)
        if reverse and name.endswith("_adjoint"):  # torchdiffeq's internal, negated time
            expected = [(-t0, dt) for t0, dt in expected]
        assert len(ours.of(name)) == len(expected) == 10
        np.testing.assert_allclose(ours.of(name), expected, atol=1e-12)


def test_adaptive_callbacks_chain_the_steps() -> None:
    names = ("callback_step", "callback_accept_step", "callback_reject_step")
    f = Recording(names + tuple(n + "_adjoint" for n in names))
    y0 = torch.tensor([3.0, -2.0], dtype=F64, requires_grad=True)
    ys = odeint_adjoint(f, y0, torch.tensor([0.0, 5.0], dtype=F64), rtol=1e-3, atol=1e-3)
    ys.sum().backward()
    for suffix, start, end in (("", 0.0, 5.0), ("_adjoint", 5.0, 0.0)):
        steps = f.of("callback_step" + suffix)
        accepted = f.of("callback_accept_step" + suffix)
        rejected = f.of("callback_reject_step" + suffix)
        assert steps and len(accepted) + len(rejected) == len(steps)
        assert accepted[0][0] == start
        direction = math.copysign(1.0, end - start)
        for (t0, dt), (t1, _) in itertools.pairwise(accepted):  # each starts where one ended
            assert t1 == pytest.approx(t0 + direction * dt, abs=1e-12)
        assert accepted[-1][0] + direction * accepted[-1][1] == pytest.approx(end, abs=1e-12)


@pytest.mark.parametrize("name", ["callback_accept_step", "callback_reject_step"])
def test_accept_callback_on_fixed_method_warns(name: str) -> None:
    f = Recording((name,))
    with pytest.warns(UserWarning, match=name):
        odeint(f, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="euler")
    assert f.calls == []


# ---------------------------------------------------------------------------------------------
# 2. interp and grid_constructor


@pytest.mark.parametrize("interp", [None, "linear", "cubic"])
@pytest.mark.parametrize("method", ["euler", "rk4", "implicit_adams"])
def test_interp_matches_torchdiffeq(interp: str | None, method: str) -> None:
    t = torch.linspace(0.0, 3.0, 8, dtype=F64)  # off the grid of steps
    options = {"step_size": 0.25} | ({"interp": interp} if interp else {})
    tolerances = {"rtol": 1e-4, "atol": 1e-6}  # the Adams corrector's, reached at this step
    ours = odeint(pendulum, Y0, t, method=method, options=options, **tolerances)
    theirs = torchdiffeq.odeint(pendulum, Y0, t, method=method, options=options, **tolerances)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_linear_and_cubic_differ_off_the_grid() -> None:
    t = torch.linspace(0.0, 3.0, 8, dtype=F64)
    linear, cubic = (odeint(pendulum, Y0, t, method="rk4",
                            options={"step_size": 0.25, "interp": i}) for i in ("linear", "cubic"))
    assert (linear - cubic).abs().max() > 1e-4


@pytest.mark.parametrize("reverse", [False, True])
def test_grid_constructor_matches_torchdiffeq(reverse: bool) -> None:
    t = torch.tensor([3.0, 1.0, 0.0] if reverse else [0.0, 1.0, 3.0], dtype=F64)
    def grid(func, y0, t):
        return torch.linspace(float(t[0]), float(t[-1]), 13, dtype=t.dtype)

    ours = odeint(pendulum, Y0, t, method="heun3", options={"grid_constructor": grid})
    theirs = torchdiffeq.odeint(pendulum, Y0, t, method="heun3",
                                options={"grid_constructor": grid})
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_grid_constructor_with_step_size_is_an_error() -> None:
    with pytest.raises(tidal.IncompatibleOptionsError, match="grid_constructor"):
        odeint(pendulum, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4",
               options={"step_size": 0.1, "grid_constructor": lambda f, y, t: t})


def test_bad_interp_is_an_error() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match="interp"):
        odeint(pendulum, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4",
               options={"interp": "quadratic"})


# ---------------------------------------------------------------------------------------------
# 3, 4. perturb and jump_t in the state's dtype


@pytest.mark.parametrize("method", ["euler", "gl4"])  # gl4: the Jacobian at a step's start too
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("adjoint", [False, True])
def test_perturb_never_evaluates_on_the_grid(method: str, dtype: torch.dtype,
                                             adjoint: bool) -> None:
    seen: list[float] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert t.dtype == dtype
        seen.append(t.item())
        return -y

    y0 = torch.tensor([1.0, 2.0], dtype=dtype, requires_grad=True)
    solve = odeint_adjoint if adjoint else odeint
    extra = {"adjoint_params": ()} if adjoint else {}
    ys = solve(f, y0, torch.tensor([0.0, 1.0]), method=method,
               options={"step_size": 0.5, "perturb": True}, **extra)
    if adjoint:
        seen.clear()
        ys.sum().backward()
    assert not {0.0, 0.5, 1.0} & set(seen)
    tiny = float(torch.nextafter(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)))
    after_half = float(torch.nextafter(torch.tensor(0.5, dtype=dtype),
                                       torch.tensor(1.0, dtype=dtype)))
    if not adjoint and method == "euler":  # just after 0 and 0.5, exactly as torchdiffeq
        assert seen == [tiny, after_half]


def jump_field(nfe: list[int]):
    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nfe.append(t.item())
        return -0.5 * x if t < 0.5 else x**2
    return f


def jump_exact(x0: torch.Tensor, t: float) -> torch.Tensor:
    half = x0 * math.exp(-0.25)
    return 1 / (1 / half - (t - 0.5))


@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2", "bosh3", "dopri5"])
def test_jump_t_float32(method: str) -> None:
    x0 = torch.tensor([1.0, 1.2])
    seen: list[float] = []
    ys = odeint(jump_field(seen), x0, torch.tensor([0.0, 1.0]), rtol=1e-6, atol=1e-6,
                method=method, options={"jump_t": torch.tensor([0.5])})
    assert 0.5 not in seen  # f on either side of the jump, never on it
    torch.testing.assert_close(ys[-1], jump_exact(x0, 1.0), rtol=1e-3, atol=0)
    theirs: list[float] = []
    torchdiffeq.odeint(jump_field(theirs), x0, torch.tensor([0.0, 1.0]), rtol=1e-6,
                       atol=1e-6, method=method, options={"jump_t": torch.tensor([0.5])})
    # torchdiffeq's steps, except that tidal's last one ends on t[-1]: never more calls
    assert len(seen) <= len(theirs)


def test_default_max_num_steps_is_torchdiffeqs() -> None:
    """More than tidal.defaults.MAX_STEPS steps run by default, as in torchdiffeq (2^31 - 1):
    Euler on y' = -y gives y0 (1 - h)^N exactly; an explicit `max_num_steps` stops the solve
    with a message naming it."""
    steps = tidal.defaults.MAX_STEPS + 50
    h = 1.0 / steps
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = odeint(lambda t, y: -y, Y0, t, method="euler", options={"step_size": h})
    torch.testing.assert_close(ys[-1], Y0 * (1 - h) ** steps, rtol=1e-12, atol=0)
    with pytest.raises(tidal.SolveFailedError, match="max_num_steps"):
        odeint(lambda t, y: -y, Y0, t, method="euler",
               options={"step_size": h, "max_num_steps": 100})


def test_max_num_steps_bounds_each_output_interval() -> None:
    """torchdiffeq counts max_num_steps per output interval: about 60 steps (max_step) in
    each of two intervals pass a limit of 70 in both libraries (tidal's bound is 70 x 2 for
    the solve) and fail a limit of 50 in both."""
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    options = {"max_step": 1 / 60, "max_num_steps": 70}
    ours = odeint(lambda t, y: -y, Y0, t, options=options, rtol=1e-3, atol=1e-5)
    theirs = torchdiffeq.odeint(lambda t, y: -y, Y0, t, options=options, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)
    tight = {**options, "max_num_steps": 50}
    with pytest.raises(tidal.SolveFailedError, match="max_num_steps"):
        odeint(lambda t, y: -y, Y0, t, options=tight, rtol=1e-3, atol=1e-5)
    with pytest.raises(AssertionError, match="max_num_steps"):
        torchdiffeq.odeint(lambda t, y: -y, Y0, t, options=tight, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Adaptive step sequences: torchdiffeq's step-size rule and dopri5 error estimate


class Stepping(torch.nn.Module):
    """Lotka-Volterra, recording every accepted and rejected step as (accepted, t0, dt)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[bool, float, float]] = []
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return torch.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.steps.append((True, float(t0), float(dt)))

    def callback_reject_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.steps.append((False, float(t0), float(dt)))


@pytest.mark.parametrize(("method", "rtol", "round_off"), [
    ("dopri5", 1e-7, 1e-6), ("bosh3", 1e-4, 1e-6),
    ("dopri8", 1e-7, 1e-3)])  # dopri8's error estimate (~1e-12) carries round-off ~1e-4
def test_adaptive_steps_are_torchdiffeqs(method: str, rtol: float, round_off: float) -> None:
    """The same accepted and rejected steps (t0, dt), up to round-off, and calls of f as
    torchdiffeq, on a problem with rejections and several output times; except that tidal's
    last step ends on t[-1] where torchdiffeq's steps past it (docs/design.md)."""
    t = torch.linspace(0.0, 10.0, 11, dtype=F64)
    runs = []
    for library in (tidal, torchdiffeq):
        f = Stepping()
        ys = library.odeint(f, torch.tensor([1.0, 1.0], dtype=F64), t, method=method,
                            rtol=rtol, atol=rtol * 1e-2)
        runs.append((f, ys))
    (ours, ys_ours), (theirs, ys_theirs) = runs
    assert [a for a, _, _ in ours.steps] == [a for a, _, _ in theirs.steps]
    assert any(not a for a, _, _ in ours.steps)  # the rule after a rejection is exercised
    np.testing.assert_allclose([s[1:] for s in ours.steps[:-1]],
                               [s[1:] for s in theirs.steps[:-1]], rtol=round_off, atol=0)
    (_, t0, dt), (_, their_t0, their_dt) = ours.steps[-1], theirs.steps[-1]
    assert t0 + dt == pytest.approx(10.0, abs=1e-12) and their_t0 + their_dt > 10.0
    assert ours.nfe == theirs.nfe
    if method != "bosh3":  # torchdiffeq's interpolant: the same outputs but the last (tidal's
        # last step ends on it); bosh3 keeps its cubic Hermite, more accurate (below)
        torch.testing.assert_close(ys_ours[:-1], ys_theirs[:-1], rtol=0,
                                   atol=1e3 * round_off * rtol)
    reference = solve_ivp(lambda s, y: [1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]],
                          (0.0, 10.0), [1.0, 1.0], method="DOP853", t_eval=t.numpy(),
                          rtol=1e-12, atol=1e-14).y.T
    errors = [float((ys - torch.from_numpy(reference)).abs().max())
              for ys in (ys_ours, ys_theirs)]
    assert errors[0] <= 1.1 * errors[1]


def test_a_last_step_landing_on_the_end_saves_torchdiffeqs_rejection() -> None:
    """Where torchdiffeq's step past t[-1] is rejected and retaken, tidal's last step (ending
    on t[-1]) is accepted: the same steps before it and one step's calls of f fewer (the
    README's and docs/design.md's claim)."""

    class Pendulum(Stepping):
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.nfe += 1
            return torch.stack([y[1], -torch.sin(y[0]) - 0.1 * y[1] + 0.5 * torch.cos(t)])

    t = torch.linspace(0.0, 4.0, 9, dtype=F64)
    ours, theirs = Pendulum(), Pendulum()
    odeint(ours, torch.tensor([1.0, -0.5], dtype=F64), t, rtol=1e-4, atol=1e-6)
    torchdiffeq.odeint(theirs, torch.tensor([1.0, -0.5], dtype=F64), t, rtol=1e-4, atol=1e-6)
    assert [a for a, _, _ in theirs.steps[-2:]] == [False, True]  # past 4, rejected, retaken
    assert theirs.steps[-2][1] + theirs.steps[-2][2] > 4.0
    assert len(ours.steps) == len(theirs.steps) - 1 and ours.steps[-1][0]
    np.testing.assert_allclose([s[1:] for s in ours.steps[:-1]],
                               [s[1:] for s in theirs.steps[:-2]], rtol=1e-9, atol=0)
    assert ours.steps[-1][1] + ours.steps[-1][2] == pytest.approx(4.0, abs=1e-12)
    assert ours.nfe == theirs.nfe - 6  # dopri5: six new stages a step


@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2"])
def test_last_stage_reuse_is_torchdiffeqs(method: str) -> None:
    """torchdiffeq hands the last stage on as f(t1, y1) (not taken at y1 for these two): the
    same accepted steps and calls of f."""
    t = torch.tensor([0.0, 2.0], dtype=F64)
    runs = []
    for library in (tidal, torchdiffeq):
        f = Stepping()
        library.odeint(f, torch.tensor([1.0, 1.0], dtype=F64), t, method=method, rtol=1e-4,
                       atol=1e-6)
        runs.append(f)
    ours, theirs = runs
    assert [a for a, _, _ in ours.steps] == [a for a, _, _ in theirs.steps]
    np.testing.assert_allclose([s[1:] for s in ours.steps[:-1]],
                               [s[1:] for s in theirs.steps[:-1]], rtol=1e-6, atol=0)
    assert ours.nfe == theirs.nfe


def test_step_size_rule_is_torchdiffeqs() -> None:
    from torchdiffeq._impl.misc import _optimal_step_size

    from tidal.compat._steps import TorchdiffeqController

    controller = TorchdiffeqController(rtol=1e-6, atol=1e-8, safety=0.8, factor_min=0.3,
                                       factor_max=6.0)
    as_tensor = lambda x: torch.tensor(x, dtype=F64)  # noqa: E731
    for ratio in (0.0, 1e-9, 0.3, 0.7, 0.99, 1.0, 1.5, 30.0, 1e9):
        expected = float(_optimal_step_size(as_tensor(1.0), as_tensor(ratio), as_tensor(0.8),
                                            as_tensor(6.0), as_tensor(0.3), 5))
        accept, factor, _ = controller.adapt(ratio, (1.0, 1.0), 1 / 5)
        assert accept == (ratio <= 1.0)
        assert factor == pytest.approx(expected, rel=1e-14)
        accepts, factors, _ = controller.adapt(as_tensor([ratio]), (1.0, 1.0), 1 / 5)
        assert bool(accepts[0]) == accept and float(factors[0]) == pytest.approx(expected)
    assert controller.adapt(math.nan, (1.0, 1.0), 1 / 5)[:2] == (False, 0.3)


def test_torchdiffeq_dopri5_error_estimate_is_fourth_order() -> None:
    """b_hat = b - b_error satisfies the order conditions to order 4 and not 5."""
    from tidal.compat._steps import TorchdiffeqDopri5
    from tidal.solvers.order_conditions import achieved_order

    tableau = TorchdiffeqDopri5.tableau
    a = np.zeros((7, 7))
    for row in tableau.a:  # stage i has i coefficients
        a[len(row), :len(row)] = row
    b_hat = np.array(tableau.b) - np.array(tableau.b_error[0])
    assert achieved_order(b_hat, a, a, tol=1e-13) == 4
    assert b_hat[-1] == pytest.approx(1 / 60) and b_hat[0] == pytest.approx(1951 / 21600)


# ---------------------------------------------------------------------------------------------
# 5, 6, 10. The adjoint: f without y, its norms


def test_adjoint_with_f_independent_of_y() -> None:
    y0 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    t = torch.linspace(1.0, 8.0, 10, dtype=F64)
    ys = odeint_adjoint(lambda t, y: -0.1 * torch.exp(-0.1 * t), y0, t, adjoint_params=())
    torch.testing.assert_close(ys, torch.exp(-0.1 * t) - math.exp(-0.1) + 1.0, rtol=0,
                               atol=1e-6)
    ys.sum().backward()
    assert y0.grad is not None and float(y0.grad) == pytest.approx(10.0, abs=1e-12)


def _norm_recorder(record: list) -> object:
    def norm(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        record.append([tuple(p.shape) for p in parts])
        return torch.stack([p.abs().max() for p in parts]).max()
    return norm


@pytest.mark.parametrize("tuple_state", [False, True])
def test_adjoint_norm_callable_gets_torchdiffeq_tuple(tuple_state: bool) -> None:
    def run(library) -> list:
        record: list = []
        f = Net()
        if tuple_state:
            y0 = (torch.tensor([0.5, 1.0], dtype=F64, requires_grad=True),
                  torch.tensor([[0.3]], dtype=F64, requires_grad=True))
            func = TupleNet(f)
        else:
            y0, func = torch.tensor([0.5, 1.0], dtype=F64, requires_grad=True), f
        ys = library.odeint_adjoint(func, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                    adjoint_options={"norm": _norm_recorder(record)})
        sum(y.sum() for y in (ys if tuple_state else (ys,))).backward()
        return record

    ours, theirs = run(tidal), run(torchdiffeq)
    assert ours and ours[0] == theirs[0]


class TupleNet(torch.nn.Module):
    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return self.net(t, y[0]), -y[1]


@pytest.mark.parametrize("choice", [None, "seminorm"])
@pytest.mark.parametrize("tuple_state", [False, True])
def test_adjoint_norms_are_torchdiffeqs(choice: str | None, tuple_state: bool) -> None:
    """Our backward norm on [y, adjoint, parameter gradients] against torchdiffeq's own
    function on the same scaled errors (it has one more component, the time adjoint: 0)."""
    from tidal.compat._tuples import Flattener
    from tidal.compat.torchdiffeq import _adjoint_norm, _state_norm

    y0 = ((torch.zeros(2, dtype=F64), torch.zeros(3, dtype=F64)) if tuple_state
          else torch.zeros(5, dtype=F64))
    params = (torch.zeros(4, dtype=F64), torch.zeros(2, 3, dtype=F64))
    flat = Flattener(y0)
    ours = _adjoint_norm(choice, _state_norm({}, flat), flat, params)
    options = {} if choice is None else {"norm": choice}
    shapes = [y.shape for y in y0] if tuple_state else None
    handle_adjoint_norm_(options, shapes, _mixed_norm_of(shapes) if tuple_state else _rms_norm)
    torch.manual_seed(1)
    for _ in range(5):
        scaled = torch.randn(5 + 5 + 10, dtype=F64) * torch.rand(20, dtype=F64) * 3
        y, a, g = scaled[:5], scaled[5:10], scaled[10:]
        theirs = options["norm"]((torch.zeros((), dtype=F64), y, a, g[:4], g[4:].view(2, 3)))
        torch.testing.assert_close(ours(scaled), torch.as_tensor(theirs, dtype=F64))


def _mixed_norm_of(shapes: list) -> object:
    sizes = [math.prod(s) for s in shapes]
    return lambda y: _mixed_norm(tuple(torch.split(y, sizes)))


# ---------------------------------------------------------------------------------------------
# 7, 9. odeint_event, odeint_dense, odeint_adjoint(event_fn)


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint])
def test_odeint_event_time_and_gradient(interface) -> None:
    """y' = -y from y0 reaches 1/2 at t* = t0 + log(2 y0): dt*/dy0 = 1/y0, dt*/dt0 = 1."""
    y0 = torch.tensor([1.5], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.25, dtype=F64, requires_grad=True)
    kwargs = {"adjoint_params": ()} if interface is odeint_adjoint else {}
    event_t, ys = odeint_event(lambda t, y: -y, y0, t0,
                               event_fn=lambda t, y: y.sum() - 0.5, odeint_interface=interface,
                               rtol=1e-10, atol=1e-12, **kwargs)
    assert float(event_t.detach()) == pytest.approx(0.25 + math.log(3.0), abs=1e-8)
    assert ys.shape == (2, 1) and float(ys[-1].detach()) == pytest.approx(0.5, abs=1e-8)
    grad_y0, grad_t0 = torch.autograd.grad(event_t, (y0, t0))
    assert float(grad_y0) == pytest.approx(1 / 1.5, abs=1e-6)
    assert float(grad_t0) == pytest.approx(1.0, abs=1e-6)


def test_odeint_event_reverse_time() -> None:
    y0 = torch.tensor([1.5], dtype=F64)
    event_t, _ = odeint_event(lambda t, y: -y, y0, torch.tensor(0.0, dtype=F64),
                              event_fn=lambda t, y: y.sum() - 3.0, reverse_time=True,
                              rtol=1e-10, atol=1e-12)
    assert float(event_t) == pytest.approx(-math.log(2.0), abs=1e-8)


def test_odeint_with_event_and_t_requiring_grad_does_not_warn() -> None:
    t = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        event_t, _ = odeint(lambda t, y: -y, torch.tensor([1.0], dtype=F64), t,
                            event_fn=lambda t, y: y.sum() - 0.5)
    assert float(event_t.detach()) == pytest.approx(math.log(2.0), abs=1e-6)


def test_odeint_dense_matches_exact_and_torchdiffeq() -> None:
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    t0, t1 = torch.tensor(0.0, dtype=F64), torch.tensor(2.0, dtype=F64)
    ours = odeint_dense(lambda t, y: -y, y0, t0, t1, rtol=1e-9, atol=1e-11)
    theirs = torchdiffeq.odeint_dense(lambda t, y: -y, y0, t0, t1, rtol=1e-9, atol=1e-11)
    times = torch.linspace(0.0, 2.0, 7, dtype=F64)
    exact = torch.exp(-times)[:, None] * y0
    torch.testing.assert_close(ours(times), exact, rtol=0, atol=1e-8)
    for time, row in zip(times[1:-1], exact[1:-1]):
        torch.testing.assert_close(theirs(time), row, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# 8. Adams methods and scipy_solver


@pytest.mark.parametrize(("method", "max_order"), [
    ("explicit_adams", 4), ("explicit_adams", 6), ("implicit_adams", 4), ("implicit_adams", 6),
    ("implicit_adams", 12)])  # explicit order 12 is unstable: round-off grows, in both
def test_adams_matches_torchdiffeq(method: str, max_order: int) -> None:
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)
    options = {"step_size": 0.05, "max_order": max_order}
    ours = odeint(pendulum, Y0, t, method=method, options=options, rtol=1e-8, atol=1e-10)
    theirs = torchdiffeq.odeint(pendulum, Y0, t, method=method, options=options, rtol=1e-8,
                                atol=1e-10)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_adams_weights_are_exact() -> None:
    """AB4 = (55, -59, 37, -9)/24, AM4 = (9, 19, -5, 1)/24 (Hairer, Nørsett and Wanner)."""
    from tidal.solvers.adams import bashforth, moulton

    assert bashforth(4) == pytest.approx([55 / 24, -59 / 24, 37 / 24, -9 / 24], abs=1e-15)
    assert moulton(4) == pytest.approx([9 / 24, 19 / 24, -5 / 24, 1 / 24], abs=1e-15)


def test_adams_gradient_matches_torchdiffeq() -> None:
    grads = []
    for library in (tidal, torchdiffeq):
        y0 = Y0.clone().requires_grad_()
        library.odeint(pendulum, y0, torch.tensor([0.0, 1.0], dtype=F64),
                       method="implicit_adams", options={"step_size": 0.1}).sum().backward()
        grads.append(y0.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", ["RK45", "DOP853", "Radau", "BDF", "LSODA"])
@pytest.mark.parametrize("reverse", [False, True])
def test_scipy_solver_matches_torchdiffeq(solver: str, reverse: bool) -> None:
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    t = t.flip(0) if reverse else t
    options = {"solver": solver}
    ours = odeint(pendulum, Y0, t, method="scipy_solver", options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchdiffeq passes min_step to every method
        theirs = torchdiffeq.odeint(pendulum, Y0, t, method="scipy_solver", options=options)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("min_step", "max_step"), [(0.0, math.inf), (2.0, math.inf),
                                                    (0.0, 0.05)])
def test_scipy_lsoda_min_and_max_step(min_step: float, max_step: float) -> None:
    """The same calls of f as torchdiffeq; where scipy's own LSODA fails with these options
    (min_step 2 on [1, 8]: scipy 1.15 fails, 1.17 finishes with a warning), a named error
    instead of torchdiffeq's silently short result."""
    y0, t = torch.tensor([1.0, 0.5], dtype=F64), torch.linspace(1.0, 8.0, 10, dtype=F64)
    options = {"solver": "LSODA", "min_step": min_step, "max_step": max_step}
    net = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LSODA on convergence with a large min_step
        scipy_alone = solve_ivp(
            lambda s, y: net(torch.tensor(s), torch.from_numpy(y)).detach().numpy(),
            (1.0, 8.0), y0.numpy(), method="LSODA", t_eval=t.numpy(), min_step=min_step,
            max_step=max_step)
    if not scipy_alone.success:
        with pytest.raises(tidal.SolveFailedError, match="scipy's LSODA"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tidal.odeint(Net(), y0, t, method="scipy_solver", options=options)
        return
    counts = []
    for library in (tidal, torchdiffeq):
        f = Net()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LSODA on convergence with a large min_step
            library.odeint(f, y0, t, method="scipy_solver", options=options)
        counts.append(f.nfe)
    assert counts[0] == counts[1]
    if max_step < math.inf:
        assert counts[0] >= 7.0 / max_step  # at least one call per step


@pytest.mark.parametrize("method", ["radauIIA5", "gl4"])
def test_adjoint_with_implicit_method(method: str) -> None:
    """y' = a y + sin t: d y(T)/d y0 = exp(a T), d y(T)/da = T y0 exp(a T) + int_0^T (T - s)
    exp(a (T - s)) sin s ds (the backward solve differentiates the adjoint field)."""
    from scipy.integrate import quad

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(-0.7, dtype=F64))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.a * y + torch.sin(t)

    f, y0, end = Field(), torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True), 1.5
    ys = odeint_adjoint(f, y0, torch.tensor([0.0, end], dtype=F64), method=method,
                        options={"step_size": 0.05})
    ys[-1].sum().backward()
    decay = math.exp(-0.7 * end)
    forcing = quad(lambda s: (end - s) * math.exp(-0.7 * (end - s)) * math.sin(s), 0, end)[0]
    torch.testing.assert_close(y0.grad, torch.full((2,), decay, dtype=F64), rtol=1e-8, atol=0)
    assert f.a.grad is not None
    assert float(f.a.grad) == pytest.approx(end * 3.0 * decay + 2 * forcing, rel=1e-7)


def test_scipy_solver_adjoint_uses_adjoint_tolerances() -> None:
    """adjoint_rtol/adjoint_atol set the backward solve: looser, fewer calls of f and a gradient
    within the looser tolerance of the exact one, d/dy0 sum y(T) = exp(a T)."""
    def gradient(**tolerances: float) -> tuple[int, float]:
        calls = [0]

        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return -0.7 * y

        y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
        ys = odeint_adjoint(f, y0, torch.tensor([0.0, 3.0], dtype=F64), method="scipy_solver",
                            options={"solver": "RK45"}, rtol=1e-10, atol=1e-12,
                            adjoint_params=(), **tolerances)
        forward = calls[0]
        ys[-1].sum().backward()
        assert y0.grad is not None
        return calls[0] - forward, float(y0.grad)

    exact = math.exp(-0.7 * 3.0)
    tight_calls, tight = gradient()
    loose_calls, loose = gradient(adjoint_rtol=1e-4, adjoint_atol=1e-6)
    assert loose_calls < tight_calls / 4
    assert tight == pytest.approx(exact, rel=1e-8)
    assert loose == pytest.approx(exact, rel=1e-3) and loose != pytest.approx(exact, rel=1e-8)


def test_scipy_solver_adjoint_gradient() -> None:
    """y' = a y: y(T) = y0 exp(a (T - t0)); d/da sum y(T) = (T - t0) sum y0 exp(a (T - t0)),
    d/dT = a sum y(T) = -d/dt0."""
    a = torch.tensor(-0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.5], dtype=F64, requires_grad=True)
    ys = odeint_adjoint(lambda t, y: a * y, y0, t, method="scipy_solver",
                        options={"solver": "DOP853"}, rtol=1e-10, atol=1e-12,
                        adjoint_params=(a,))
    ys[-1].sum().backward()
    assert a.grad is not None and y0.grad is not None and t.grad is not None
    decay = math.exp(-0.7 * 1.5)
    assert float(a.grad) == pytest.approx(1.5 * 3.0 * decay, rel=1e-7)
    torch.testing.assert_close(y0.grad, torch.full((2,), decay, dtype=F64))
    rate = -0.7 * 3.0 * decay
    torch.testing.assert_close(t.grad, torch.tensor([-rate, rate], dtype=F64))


@pytest.mark.slow  # ~5 s on the loaded machine: the Jacobian through t's graph
def test_implicit_method_float32_field_independent_of_y() -> None:
    """torchdiffeq's `exp` test problem in float32, y' = -0.1 exp(-0.1 t), y = exp(-0.1 t): the
    stiff method's Jacobian (df/dy = 0) is formed in the state's dtype."""
    t = torch.linspace(1.0, 3.0, 3, dtype=F64, requires_grad=True)  # as torchdiffeq's test
    ys = odeint(lambda t, y: -0.1 * torch.exp(-0.1 * t),  # a 0-d state, f without y
                torch.tensor(math.exp(-0.1), requires_grad=True), t, method="gl4",
                options={"step_size": 0.05})
    assert ys.dtype == torch.float32
    torch.testing.assert_close(ys.detach(), torch.exp(-0.1 * t.detach()).float(), rtol=1e-5,
                               atol=0)
