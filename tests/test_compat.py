"""`tidal.odeint` against torchdiffeq (the library it replaces) and against scipy references.

torchdiffeq is a test-time reference only, installed by the `test` extra (never a dependency of
tidal itself). Accuracy is measured against scipy's DOP853 at rtol = atol = 1e-13.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torchdiffeq  # a test-time reference, installed by the test extra
from scipy.integrate import solve_ivp

import tidal

F64 = torch.float64
FIXED = ["euler", "midpoint", "rk4", "heun2", "heun3"]
ADAPTIVE = ["adaptive_heun", "fehlberg2", "bosh3", "dopri5", "dopri8"]
SHARED = FIXED + ADAPTIVE

# Forced, damped pendulum: nonlinear and time dependent.


def pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -torch.sin(y[0]) - 0.1 * y[1] + 0.5 * torch.cos(t)])


def pendulum_np(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([y[1], -np.sin(y[0]) - 0.1 * y[1] + 0.5 * np.cos(t)])


Y0 = torch.tensor([1.0, -0.5], dtype=F64)


def reference(t: torch.Tensor, y0: torch.Tensor = Y0, f=pendulum_np) -> torch.Tensor:
    times = t.numpy()
    if len(times) == 1:
        return y0.unsqueeze(0).clone()
    sol = solve_ivp(f, (times[0], times[-1]), y0.numpy(), method="DOP853", t_eval=times,
                    rtol=1e-13, atol=1e-13)
    assert sol.success
    return torch.from_numpy(sol.y.T.copy())


def grid(reverse: bool, n: int = 9) -> torch.Tensor:
    t = torch.linspace(0.0, 4.0, n, dtype=F64)
    return t.flip(0) - 1.0 if reverse else t


# ---------------------------------------------------------------------------------------------
# Shapes and the initial value


def _options(method: str, with_step_size: bool) -> dict | None:
    return {"step_size": 0.125} if (method in FIXED and with_step_size) else None


METHOD_OPTIONS = [(m, True) for m in FIXED] + [(m, False) for m in SHARED]


@pytest.mark.parametrize(("method", "with_step_size"), METHOD_OPTIONS)
@pytest.mark.parametrize("shape", [(3,), (2, 3), ()])
def test_output_shape_and_initial_value(method: str, with_step_size: bool, shape: tuple) -> None:
    y0 = torch.linspace(0.5, 1.5, math.prod(shape), dtype=F64).reshape(shape)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=F64)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -y * torch.cos(t)

    options = _options(method, with_step_size)
    out = tidal.odeint(f, y0, t, rtol=1e-5, atol=1e-7, method=method, options=options)
    ref = torchdiffeq.odeint(f, y0, t, rtol=1e-5, atol=1e-7, method=method, options=options)
    assert out.shape == ref.shape == (len(t), *shape)
    assert out.dtype == F64
    assert torch.equal(out[0], y0)
    if method in FIXED:  # the same steps, interpolated linearly between them
        assert (out - ref).abs().max() <= 1e-12
    else:
        exact = y0 * torch.exp(-torch.sin(t)).reshape(-1, *([1] * len(shape)))
        tol = {"euler": 5e-2, "midpoint": 1e-2, "heun2": 1e-2, "fehlberg2": 1e-3}.get(method, 1e-4)
        # or torchdiffeq's own error: the drop-in takes its steps
        assert torch.allclose(out, exact, atol=max(tol, 1.1 * float((ref - exact).abs().max())))


@pytest.mark.parametrize(("method", "with_step_size"), METHOD_OPTIONS)
def test_single_time_returns_y0(method: str, with_step_size: bool) -> None:
    y0 = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    t = torch.tensor([0.5], dtype=F64)
    options = _options(method, with_step_size)
    out = tidal.odeint(lambda t, y: -y, y0, t, method=method, options=options)
    ref = torchdiffeq.odeint(lambda t, y: -y, y0, t, method=method, options=options)
    assert out.shape == ref.shape == (1, 1, 3)
    assert torch.equal(out[0], y0)


def test_float32_state() -> None:
    y0 = Y0.float()
    t = grid(False).float()
    out = tidal.odeint(pendulum, y0, t, rtol=1e-5, atol=1e-6)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), reference(grid(False)), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Accuracy


TOLERANCES = {"adaptive_heun": (1e-5, 1e-7), "fehlberg2": (1e-5, 1e-7), "bosh3": (1e-6, 1e-8),
              "dopri5": (1e-7, 1e-9), "dopri8": (1e-9, 1e-11)}


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("loose", [False, True])
def test_adaptive_accuracy_no_worse_than_torchdiffeq(method: str, reverse: bool,
                                                     loose: bool) -> None:
    rtol, atol = TOLERANCES[method]
    if loose:
        rtol, atol = 1e-4, 1e-6
    t = grid(reverse)
    exact = reference(t)
    ours = (tidal.odeint(pendulum, Y0, t, rtol=rtol, atol=atol, method=method) - exact)
    theirs = (torchdiffeq.odeint(pendulum, Y0, t, rtol=rtol, atol=atol, method=method) - exact)
    err, ref_err = ours.abs().max().item(), theirs.abs().max().item()
    assert err <= 2 * ref_err + 1e-12, (err, ref_err)
    if method == "dopri8" and not loose:
        # At rtol 1e-9 torchdiffeq's quartic interpolant, which the drop-in keeps, limits
        # both libraries (~500 rtol between steps), and dopri8's error estimate (~1e-12 of
        # the state) carries round-off, so the steps follow the platform: 4.9e-7 here and
        # 6.9e-7 on an H200 machine's CPU against torchdiffeq's 4.5e-7. The comparison above
        # holds everywhere, and so does the accuracy of the last output, a step's end in tidal
        # (1.4e-10 here; torchdiffeq interpolates it: 3.6e-8).
        assert ours[-1].abs().max().item() <= 500 * rtol
        return
    assert err <= max(500 * rtol, ref_err)  # accurate in absolute terms, or as torchdiffeq


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("reverse", [False, True])
def test_fixed_step_size_matches_torchdiffeq_on_grid(method: str, reverse: bool) -> None:
    """With step_size both libraries step on t0 + k h (the last step shortened); outputs on
    that grid are the step results themselves."""
    t = torch.tensor([0.0, 0.25, 1.0, 1.5, 2.125, 3.0], dtype=F64)
    if reverse:
        t = -t
    options = {"step_size": 0.125}
    out = tidal.odeint(pendulum, Y0, t, method=method, options=options)
    ref = torchdiffeq.odeint(pendulum, Y0, t, method=method, options=options)
    assert (out - ref).abs().max() <= 1e-12


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("reverse", [False, True])
def test_fixed_step_without_step_size_steps_on_t(method: str, reverse: bool) -> None:
    t = torch.tensor([0.0, 0.1, 0.15, 0.4, 0.45, 0.9, 1.0], dtype=F64)
    if reverse:
        t = 1.0 - t
    out = tidal.odeint(pendulum, Y0, t, method=method)
    ref = torchdiffeq.odeint(pendulum, Y0, t, method=method)
    assert (out - ref).abs().max() <= 1e-12


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_last_step_shortened(method: str) -> None:
    """step_size that does not divide the span: the final time is still hit exactly."""
    t = torch.tensor([0.0, 1.0, 1.3], dtype=F64)
    options = {"step_size": 0.25}
    out = tidal.odeint(pendulum, Y0, t, method=method, options=options)
    ref = torchdiffeq.odeint(pendulum, Y0, t, method=method, options=options)
    assert (out - ref).abs().max() <= 1e-12


# ---------------------------------------------------------------------------------------------
# Tuple states and per-element tolerances


def tuple_field(t: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]):
    a, b = y
    return -a, a - b


def tuple_exact(t: torch.Tensor, a0: torch.Tensor, b0: torch.Tensor):
    """a' = -a, b' = a - b: a = a0 e^-t, b = (b0 + a0 t) e^-t."""
    e = torch.exp(-t)
    return (a0 * e.reshape(-1, *([1] * a0.dim())),
            (b0 + a0 * t.reshape(-1, *([1] * b0.dim()))) * e.reshape(-1, *([1] * b0.dim())))


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8", "rk4", "euler"])
@pytest.mark.parametrize("reverse", [False, True])
def test_tuple_state_with_0d_tensor(method: str, reverse: bool) -> None:
    a0 = torch.tensor(1.5, dtype=F64)
    b0 = torch.tensor([0.5, -0.25], dtype=F64)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64) * (-1 if reverse else 1)
    options = {"step_size": 0.0625} if method in FIXED else None
    a, b = tidal.odeint(tuple_field, (a0, b0), t, method=method, options=options)
    ra, rb = torchdiffeq.odeint(tuple_field, (a0, b0), t, method=method, options=options)
    assert a.shape == ra.shape == (4,)
    assert b.shape == rb.shape == (4, 2)
    assert a[0] == a0 and torch.equal(b[0], b0)
    ea, eb = tuple_exact(t, a0, b0)
    if method in FIXED:  # the same steps: the same numbers
        assert (a - ra).abs().max() <= 1e-12 and (b - rb).abs().max() <= 1e-12
    tol = {"euler": 0.2, "rk4": 1e-6}.get(method, 1e-5)
    tol = max(tol, 1.1 * float(torch.cat([(ra - ea).abs(), ((rb - eb) / eb.abs().clamp(
        min=1.0)).abs().flatten()]).max()))  # or torchdiffeq's own error (its steps)
    assert torch.allclose(a, ea, rtol=tol, atol=tol) and torch.allclose(b, eb, rtol=tol, atol=tol)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8"])
def test_tuple_tolerances_decouple_components(method: str) -> None:
    """With torchdiffeq's mixed norm (the largest RMS over the tuple's elements), an element
    whose tolerances are huge never controls the step, so the first element follows exactly the
    steps it takes alone (a' = -a does not depend on b)."""
    a0 = torch.tensor([1.0, 2.0], dtype=F64)
    b0 = torch.tensor([0.5, 0.25, 3.0], dtype=F64)

    def f(t, y):
        a, b = y
        return -a, torch.cos(20 * t) * b + a.sum()

    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    options = {"first_step": 0.01}
    a, _ = tidal.odeint(f, (a0, b0), t, rtol=(1e-6, 1e10), atol=(1e-8, 1e10), method=method,
                        options=options)
    alone = tidal.odeint(lambda t, a: -a, a0, t, rtol=1e-6, atol=1e-8, method=method,
                         options=options)
    # The same steps; only the interpolation of outputs inside a step may round differently
    # (a matrix product of another size). Different steps would differ by ~1e-7.
    assert (a - alone).abs().max() <= 1e-12
    # and both elements tight is a different (tighter) solve
    a_tight, _ = tidal.odeint(f, (a0, b0), t, rtol=1e-6, atol=1e-8, method=method,
                              options=options)
    assert not torch.equal(a_tight, alone)


def test_tuple_tolerances_against_torchdiffeq() -> None:
    a0 = torch.tensor(1.5, dtype=F64)
    b0 = torch.tensor([0.5, -0.25], dtype=F64)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    rtol, atol = (1e-4, 1e-9), (1e-6, 1e-11)
    ea, eb = tuple_exact(t, a0, b0)
    a, b = tidal.odeint(tuple_field, (a0, b0), t, rtol=rtol, atol=atol)
    ra, rb = torchdiffeq.odeint(tuple_field, (a0, b0), t, rtol=rtol, atol=atol)
    err = max((a - ea).abs().max().item(), (b - eb).abs().max().item())
    ref_err = max((ra - ea).abs().max().item(), (rb - eb).abs().max().item())
    assert err <= 2 * ref_err + 1e-13
    # The tight element drives the steps: as accurate as a solve with tight tolerances on both.
    _, b_loose = tidal.odeint(tuple_field, (a0, b0), t, rtol=1e-4, atol=1e-6)
    loose_err = (b_loose - eb).abs().max().item()
    assert (b - eb).abs().max().item() < loose_err / 100


@pytest.mark.parametrize("method", ["dopri5", "dopri8"])
def test_per_element_tensor_tolerances(method: str) -> None:
    """rtol/atol tensors that broadcast to y0: compared with torchdiffeq, and a tight
    component makes the solve more accurate than the loose scalar tolerance alone."""
    y0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=F64)
    a = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)

    def f(t, y):
        return y @ a.T

    def exact(t):
        return torch.stack([y0 @ torch.linalg.matrix_exp(a * s).T for s in t])

    t = torch.linspace(0.0, 4.0, 5, dtype=F64)
    rtol = torch.tensor([[1e-3], [1e-10]], dtype=F64)  # broadcasts over the last dim
    atol = torch.tensor([[1e-5], [1e-12]], dtype=F64)
    ours = tidal.odeint(f, y0, t, rtol=rtol, atol=atol, method=method)
    theirs = torchdiffeq.odeint(f, y0, t, rtol=rtol, atol=atol, method=method)
    ref = exact(t)
    err, ref_err = (ours - ref).abs().max().item(), (theirs - ref).abs().max().item()
    assert err <= 2 * ref_err + 1e-13
    loose = tidal.odeint(f, y0, t, rtol=1e-3, atol=1e-5, method=method)
    assert err < (loose - ref).abs().max().item() / 100


# ---------------------------------------------------------------------------------------------
# Options


DOPRI5_C = (0.2, 0.3, 0.8, 8 / 9, 1.0, 1.0)


class Recorder:
    """A vector field that records the times it is called at."""

    def __init__(self, f):
        self.f, self.times = f, []

    def __call__(self, t, y):
        self.times.append(float(t))
        return self.f(t, y)


def dopri5_steps(times: list[float]) -> list[tuple[float, float]]:
    """(start, size) of every attempted dopri5 step, from the times f was called at when the
    first step is given (f0, then six stages per step at t + c_i h for c = DOPRI5_C)."""
    stages = times[1:]
    assert len(stages) % 6 == 0
    steps = []
    for k in range(0, len(stages), 6):
        chunk = stages[k:k + 6]
        h = (chunk[4] - chunk[0]) / (1.0 - DOPRI5_C[0])
        start = chunk[4] - h
        for c, s in zip(DOPRI5_C, chunk):
            assert s == pytest.approx(start + c * h, abs=1e-12)
        steps.append((start, h))
    return steps


def oscillating(t, y):
    return torch.stack([y[1], -25.0 * y[0]]) * (1.0 + 0.5 * torch.sin(3 * t))


def test_first_step() -> None:
    f = Recorder(oscillating)
    t = torch.tensor([0.5, 2.0], dtype=F64)
    tidal.odeint(f, Y0, t, options={"first_step": 0.0123})
    assert f.times[0] == 0.5
    assert f.times[1] == pytest.approx(0.5 + 0.2 * 0.0123, abs=1e-15)
    assert dopri5_steps(f.times)[0][1] == pytest.approx(0.0123, rel=1e-9)
    # Without it, the first step is chosen by a trial evaluation at another time.
    g = Recorder(oscillating)
    tidal.odeint(g, Y0, t)
    assert g.times[1] != pytest.approx(0.5 + 0.2 * 0.0123, abs=1e-9)


@pytest.mark.parametrize(("options", "controller_kwargs"), [
    ({"safety": 0.5}, {"safety": 0.5}),
    ({"ifactor": 1.5, "first_step": 1e-4}, {"factor_max": 1.5, "dt0": 1e-4}),
    ({"dfactor": 0.5, "first_step": 1.0}, {"factor_min": 0.5, "dt0": 1.0}),
    ({"safety": 0.7, "ifactor": 3.0, "dfactor": 0.1, "min_step": 1e-3, "max_step": 0.2},
     {"safety": 0.7, "factor_max": 3.0, "factor_min": 0.1, "dt_min": 1e-3, "dt_max": 0.2}),
])
def test_controller_options_map_onto_pid_controller(options: dict,
                                                    controller_kwargs: dict) -> None:
    """Options become PIDController arguments (of its torchdiffeq form, with torchdiffeq's
    dopri5 error estimate: tidal.compat._steps). A tiny first step makes ifactor matter, a
    huge one (rejected) makes dfactor matter."""
    from tidal.compat._steps import TorchdiffeqController, TorchdiffeqDopri5

    t = torch.linspace(0.0, 3.0, 4, dtype=F64)
    out = tidal.odeint(oscillating, Y0, t, rtol=1e-6, atol=1e-8, options=options)
    sol = tidal.solve(oscillating, Y0, t, solver=TorchdiffeqDopri5(),
                      controller=TorchdiffeqController(1e-6, 1e-8, **controller_kwargs))
    first_step = {"first_step": options["first_step"]} if "first_step" in options else {}
    default = tidal.odeint(oscillating, Y0, t, rtol=1e-6, atol=1e-8, options=first_step)
    assert torch.equal(out, sol.ys)
    assert not torch.equal(out, default)  # the option did something


@pytest.mark.parametrize(("ifactor", "dfactor"), [(1.0, 0.2), (2.0, 0.9), (10.0, 0.5)])
def test_ifactor_dfactor_bound_step_changes(ifactor: float, dfactor: float) -> None:
    f = Recorder(oscillating)
    tidal.odeint(f, Y0, torch.tensor([0.0, 3.0], dtype=F64),
                 options={"first_step": 0.3, "ifactor": ifactor, "dfactor": dfactor})
    sizes = [h for _, h in dopri5_steps(f.times)][:-1]  # the last one lands on t1
    ratios = [b / a for a, b in itertools.pairwise(sizes)]
    assert len(ratios) > 5
    assert min(ratios) >= dfactor * (1 - 1e-9)
    assert max(ratios) <= ifactor * (1 + 1e-9)


def test_safety_means_more_steps() -> None:
    counts = []
    for safety in (0.95, 0.5):
        f = Recorder(oscillating)
        tidal.odeint(f, Y0, torch.tensor([0.0, 3.0], dtype=F64), options={"safety": safety,
                                                                         "first_step": 0.01})
        counts.append(len(dopri5_steps(f.times)))
    assert counts[1] > counts[0]


def test_max_num_steps() -> None:
    t = torch.tensor([0.0, 3.0], dtype=F64)
    f = Recorder(oscillating)
    tidal.odeint(f, Y0, t, options={"first_step": 0.01})
    needed = len(dopri5_steps(f.times))
    with pytest.raises(tidal.SolveFailedError, match=r"MAX_STEPS"):
        tidal.odeint(oscillating, Y0, t, options={"first_step": 0.01,
                                                  "max_num_steps": needed - 1})
    out = tidal.odeint(oscillating, Y0, t, options={"first_step": 0.01, "max_num_steps": needed})
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_step_t(reverse: bool) -> None:
    sign = -1.0 if reverse else 1.0
    t = torch.tensor([0.0, 3.0], dtype=F64) * sign
    marks = [0.37 * sign, 1.91 * sign, 5.0 * sign]  # the last one is outside the span
    f = Recorder(oscillating)
    out = tidal.odeint(f, Y0, t, options={"step_t": torch.tensor(marks, dtype=F64),
                                          "first_step": 0.01})
    ends = {round(s + h, 14) for s, h in dopri5_steps(f.times)}
    assert round(marks[0], 14) in ends and round(marks[1], 14) in ends
    assert marks[0] in f.times and marks[1] in f.times
    g = Recorder(oscillating)
    plain = tidal.odeint(g, Y0, t, options={"first_step": 0.01})
    assert marks[0] not in g.times and marks[1] not in g.times
    assert torch.allclose(out, plain, atol=1e-5)


def _jump_field(left_continuous: bool):
    """f = 1 before t = 1 and -1 after: y(0) = 0 gives y = 1 - |t - 1|."""

    def f(t, y):
        before = (t <= 1.0) if left_continuous else (t < 1.0)
        return torch.where(before, torch.ones_like(y), -torch.ones_like(y))

    return f


def _jump_solve(lib, left_continuous: bool, jump_t: list[float] | None):
    f = Recorder(_jump_field(left_continuous))
    options = {"jump_t": torch.tensor(jump_t, dtype=F64)} if jump_t else {}
    out = lib.odeint(f, torch.zeros(1, dtype=F64), torch.tensor([0.0, 0.5, 2.0], dtype=F64),
                     options=options)
    error = (out[:, 0] - torch.tensor([0.0, 0.5, 0.0], dtype=F64)).abs().max().item()
    return error, len(f.times)


def test_jump_t_left_continuous() -> None:
    error_plain, calls_plain = _jump_solve(tidal, True, None)
    error_jump, calls_jump = _jump_solve(tidal, True, [1.0])
    assert error_jump <= 1e-12
    assert error_jump < error_plain / 1000
    assert calls_jump < calls_plain / 3


def test_jump_t_right_continuous() -> None:
    error_plain, calls_plain = _jump_solve(tidal, False, None)
    error_jump, calls_jump = _jump_solve(tidal, False, [1.0])
    ref_error, ref_calls = _jump_solve(torchdiffeq, False, [1.0])
    assert ref_error <= 1e-12 and ref_calls < calls_plain / 3  # torchdiffeq gets it right
    assert error_jump <= 1e-12
    assert error_jump < error_plain / 1000
    assert calls_jump < calls_plain / 3


@pytest.mark.parametrize("method", FIXED)
def test_perturb_smooth_field_matches_torchdiffeq(method: str) -> None:
    t = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=F64)
    options = {"step_size": 0.25, "perturb": True}
    out = tidal.odeint(pendulum, Y0, t, method=method, options=options)
    ref = torchdiffeq.odeint(pendulum, Y0, t, method=method, options=options)
    assert (out - ref).abs().max() <= 1e-12


def test_perturb_piecewise_constant_field() -> None:
    """f = floor(4 t) jumps at every grid point of step_size 0.25; with perturb each step sees
    only the constant on its own interval, so y = integral of f is exact."""
    f = lambda t, y: torch.floor(4 * t) * torch.ones_like(y)  # noqa: E731
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    exact = torch.tensor([0.0, 0.25, 1.5], dtype=F64)
    options = {"step_size": 0.25, "perturb": True}
    ref = torchdiffeq.odeint(f, torch.zeros(1, dtype=F64), t, method="rk4", options=options)
    assert (ref[:, 0] - exact).abs().max() <= 1e-12
    out = tidal.odeint(f, torch.zeros(1, dtype=F64), t, method="rk4", options=options)
    assert (out[:, 0] - exact).abs().max() <= 1e-12


def test_min_step() -> None:
    t = torch.tensor([0.0, 3.0], dtype=F64)
    f = Recorder(oscillating)
    tidal.odeint(f, Y0, t, options={"first_step": 0.3})
    plain = [h for _, h in dopri5_steps(f.times)][:-1]
    assert min(plain) < 0.05  # otherwise the check below tests nothing
    g = Recorder(oscillating)
    out = tidal.odeint(g, Y0, t, options={"first_step": 0.3, "min_step": 0.05})
    sizes = [h for _, h in dopri5_steps(g.times)][:-1]
    assert min(sizes) >= 0.05 * (1 - 1e-12)
    assert torch.isfinite(out).all()


def test_max_step() -> None:
    t = torch.tensor([0.0, 3.0], dtype=F64)
    slow = Recorder(lambda t, y: -0.1 * y)
    tidal.odeint(slow, Y0, t, options={"first_step": 0.01})
    assert max(h for _, h in dopri5_steps(slow.times)) > 0.25
    f = Recorder(lambda t, y: -0.1 * y)
    out = tidal.odeint(f, Y0, t, options={"first_step": 0.01, "max_step": 0.25})
    steps = dopri5_steps(f.times)
    assert max(h for _, h in steps) <= 0.25 * (1 + 1e-12)
    assert len(steps) >= 12
    assert torch.allclose(out[-1], Y0 * math.exp(-0.3), rtol=1e-7)


def test_norm_option() -> None:
    """A norm twice the RMS with (rtol, atol) is the RMS with (rtol/2, atol/2), exactly
    (scaling by 2 is exact in binary); the norm sees the state's shape."""
    y0 = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]], dtype=F64)
    seen = []

    def double_rms(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return 2.0 * (torch.linalg.vector_norm(x) / x.numel() ** 0.5)

    def f(t, y):
        return torch.stack([y[1], -torch.sin(y[0]) + torch.cos(t)])

    t = torch.linspace(0.0, 3.0, 4, dtype=F64)
    options = {"first_step": 0.01}
    out = tidal.odeint(f, y0, t, rtol=1e-6, atol=1e-8, options={**options, "norm": double_rms})
    ref = tidal.odeint(f, y0, t, rtol=0.5e-6, atol=0.5e-8, options=options)
    loose = tidal.odeint(f, y0, t, rtol=1e-6, atol=1e-8, options=options)
    assert set(seen) == {(2, 3)}
    # the same steps (round-off aside); a different step sequence differs by ~1e-8
    assert (out - ref).abs().max() <= 1e-13
    assert (loose - ref).abs().max() > 1e-10


def test_norm_receives_the_scaled_error() -> None:
    """The norm is called on the scaled error estimate of the step, err / (atol + rtol *
    max(|y0|, |y1|)) with err = h * sum_i e_i k_i, computed here by hand for the first step of
    y' = -2 y (dopri5 with torchdiffeq's error weights e, tidal.compat._steps; first_step h)."""
    from tidal.compat._steps import TorchdiffeqDopri5

    seen = []

    def norm(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.linalg.vector_norm(x) / x.numel() ** 0.5

    lam, h, rtol, atol = -2.0, 0.1, 1e-3, 1e-6
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    tidal.odeint(lambda t, y: lam * y, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=rtol,
                 atol=atol, options={"first_step": h, "norm": norm})
    tab = TorchdiffeqDopri5.tableau
    ks: list[np.ndarray] = []
    y = y0.numpy()
    for i in range(tab.num_stages):
        ks.append(lam * (y + h * sum(tab.a[i][j] * ks[j] for j in range(i))))
    y1 = y + h * sum(b * k for b, k in zip(tab.b, ks))
    err = h * sum(e * k for e, k in zip(tab.b_error[0], ks))
    expected = err / (atol + rtol * np.maximum(np.abs(y), np.abs(y1)))
    assert np.allclose(seen[0].numpy(), expected, rtol=1e-10, atol=0)


def test_norm_option_tuple_state() -> None:
    seen = []

    def norm(x):
        seen.append(type(x))
        return max(v.abs().max() for v in x)

    a0 = torch.tensor(1.5, dtype=F64)
    b0 = torch.tensor([0.5, -0.25], dtype=F64)
    t = torch.linspace(0.0, 2.0, 3, dtype=F64)
    a, b = tidal.odeint(tuple_field, (a0, b0), t, options={"norm": norm})
    ra, rb = torchdiffeq.odeint(tuple_field, (a0, b0), t, options={"norm": norm})
    assert set(seen) == {tuple}
    ea, eb = tuple_exact(t, a0, b0)
    assert torch.allclose(a, ea, atol=1e-6) and torch.allclose(b, eb, atol=1e-6)
    assert torch.allclose(a, ra, atol=1e-6) and torch.allclose(b, rb, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Events


def falling(t, y):
    return torch.stack([y[1], torch.full_like(y[1], -9.81)])


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8", "fehlberg2"])
def test_event_fn_matches_torchdiffeq_and_analytic(method: str) -> None:
    y0 = torch.tensor([10.0, 2.0], dtype=F64)

    def hit_ground(t, y):
        return y[0]

    t = torch.tensor([0.0, 1.0], dtype=F64)
    event_t, sol = tidal.odeint(falling, y0, t, method=method, event_fn=hit_ground)
    ref_t, ref_sol = torchdiffeq.odeint(falling, y0, t, method=method, event_fn=hit_ground)
    exact_t = (2.0 + math.sqrt(4.0 + 2 * 9.81 * 10.0)) / 9.81
    assert sol.shape == ref_sol.shape == (2, 2)
    assert event_t.shape == ref_t.shape == ()
    assert torch.equal(sol[0], y0)
    assert float(event_t) == pytest.approx(exact_t, abs=1e-6)
    assert float(sol[1, 0]) == pytest.approx(0.0, abs=1e-6)
    assert float(sol[1, 1]) == pytest.approx(2.0 - 9.81 * exact_t, abs=1e-6)
    if method != "bosh3":  # torchdiffeq's bosh3 reports t = 1.2656 here, where y = 4.67
        assert float(event_t) == pytest.approx(float(ref_t), abs=1e-5)
        assert torch.allclose(sol[1], ref_sol[1], atol=1e-4)


def test_event_fn_reverse_time() -> None:
    y0 = torch.tensor([1.0, 3.0], dtype=F64)
    t = torch.tensor([0.0, -1.0], dtype=F64)

    def event_fn(t, y):
        return y[0] - 2.0  # y' = -y backwards: y = e^-t reaches 2 at t = -ln 2

    event_t, sol = tidal.odeint(lambda t, y: -y, y0, t, event_fn=event_fn)
    ref_t, ref_sol = torchdiffeq.odeint(lambda t, y: -y, y0, t, event_fn=event_fn)
    assert float(event_t) == pytest.approx(-math.log(2.0), abs=1e-7)
    assert float(event_t) == pytest.approx(float(ref_t), abs=1e-6)
    assert sol.shape == (2, 2)
    assert torch.allclose(sol[1], y0 * 2.0, rtol=1e-6)
    assert torch.allclose(sol[1], ref_sol[1], rtol=1e-5)


def test_event_fn_tuple_state() -> None:
    a0 = torch.tensor(1.0, dtype=F64)
    b0 = torch.tensor([0.0, 1.0], dtype=F64)

    def event_fn(t, y):
        return y[0] - 0.25  # a = e^-t: t = ln 4

    event_t, (a, b) = tidal.odeint(tuple_field, (a0, b0), torch.tensor([0.0, 1.0], dtype=F64),
                                   event_fn=event_fn)
    assert float(event_t) == pytest.approx(math.log(4.0), abs=1e-7)
    assert a.shape == (2,) and b.shape == (2, 2)
    ea, eb = tuple_exact(torch.tensor([0.0, math.log(4.0)], dtype=F64), a0, b0)
    assert torch.allclose(a, ea, atol=1e-7) and torch.allclose(b, eb, atol=1e-7)


def test_event_fn_fixed_step() -> None:
    y0 = torch.tensor([10.0, 2.0], dtype=F64)
    options = {"step_size": 0.01, "interp": "cubic"}  # as torchdiffeq's own event tests
    event_t, sol = tidal.odeint(falling, y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4",
                                options=options, event_fn=lambda t, y: y[0])
    ref_t, _ = torchdiffeq.odeint(falling, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                  method="rk4", options=options, event_fn=lambda t, y: y[0])
    exact_t = (2.0 + math.sqrt(4.0 + 2 * 9.81 * 10.0)) / 9.81
    assert float(event_t) == pytest.approx(exact_t, abs=1e-6)
    assert float(event_t) == pytest.approx(float(ref_t), abs=1e-4)
    assert sol.shape == (2, 2)
