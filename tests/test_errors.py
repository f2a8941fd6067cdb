"""Every bad-input path and every runtime failure of `tidal.solve` / `tidal.odeint`.

Each bad-input test checks the error's type and that its message names the argument (as the
call snippet the messages use, e.g. "`solve(ts=...)`"). Runtime failures check the status, the
partial solution and that the message says where the solve stopped and what to try.
"""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch

import tidal

F64 = torch.float64


def decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


def y0_2() -> torch.Tensor:
    return torch.ones(2, dtype=F64)


def ts_01(n: int = 2) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, n, dtype=F64)


def test_error_hierarchy() -> None:
    assert issubclass(tidal.InvalidArgumentError, ValueError)
    assert issubclass(tidal.IncompatibleOptionsError, ValueError)
    assert issubclass(tidal.UnknownOptionError, ValueError)
    assert issubclass(tidal.UnknownOptionError, TypeError)
    assert issubclass(tidal.SolveFailedError, RuntimeError)
    for cls in (tidal.InvalidArgumentError, tidal.IncompatibleOptionsError,
                tidal.UnknownOptionError, tidal.SolveFailedError):
        assert issubclass(cls, tidal.TidalError)


# ---------------------------------------------------------------------------------------------
# ts


@pytest.mark.parametrize("ts", [[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [0.0, 0.5, 0.4, 1.0]])
def test_ts_not_monotonic(ts: list[float]) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(ts=\.\.\.\)` is not monotonic"):
        tidal.solve(decay, y0_2(), torch.tensor(ts, dtype=F64))


def test_ts_not_monotonic_per_sample_names_ts() -> None:
    ts = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]], dtype=F64)  # sample 1 turns back
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(ts=\.\.\.\)` is not monotonic"):
        tidal.solve(decay, torch.ones(2, 1, dtype=F64), ts)


@pytest.mark.parametrize("ts", [[0.0, 1.0, 1.0], [0.0, 0.0], [2.0, 1.0, 1.0, 0.0]])
def test_ts_duplicate_times(ts: list[float]) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(ts=\.\.\.\)` has duplicate times"):
        tidal.solve(decay, y0_2(), torch.tensor(ts, dtype=F64))


@pytest.mark.parametrize("ts", [[0.0, math.nan, 1.0], [math.nan, 1.0], [0.0, math.nan]])
def test_ts_nan(ts: list[float]) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(ts=\.\.\.\)` contains NaN"):
        tidal.solve(decay, y0_2(), torch.tensor(ts, dtype=F64))


def test_ts_nan_per_sample() -> None:
    ts = torch.tensor([[0.0, 0.0], [1.0, math.nan]], dtype=F64)
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(ts=\.\.\.\)` contains NaN"):
        tidal.solve(decay, torch.ones(2, 1, dtype=F64), ts)


@pytest.mark.parametrize("ts", [[0.0, math.inf], [0.0, -math.inf], [-math.inf, 0.0],
                                [0.0, math.inf, 5.0]])
def test_ts_infinite_without_event(ts: list[float]) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(ts=\.\.\.\)` contains infinite times.*`event=`"):
        tidal.solve(decay, y0_2(), torch.tensor(ts, dtype=F64))


def test_ts_infinite_start_even_with_event() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(ts=\.\.\.\)` contains infinite"):
        tidal.solve(decay, y0_2(), torch.tensor([-math.inf, 0.0], dtype=F64),
                    event=lambda t, y: y[0] - 0.5)


def test_ts_infinite_end_allowed_with_event() -> None:
    """The counterpart of the check above: an infinite end is fine when an event ends it."""
    sol = tidal.solve(decay, y0_2(), torch.tensor([0.0, math.inf], dtype=F64),
                      event=lambda t, y: y[0] - 0.5)
    assert sol.status == tidal.Status.EVENT
    assert float(sol.event_t) == pytest.approx(math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("ts", [torch.tensor(1.0, dtype=F64), torch.zeros(2, 2, 2, dtype=F64),
                                torch.zeros(0, dtype=F64), torch.zeros(0, 2, dtype=F64)])
def test_ts_wrong_rank_or_empty(ts: torch.Tensor) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(ts=\.\.\.\)` must have shape \[T\].*\[T, B\]"):
        tidal.solve(decay, torch.ones(2, 1, dtype=F64), ts)


@pytest.mark.parametrize("ts", [torch.tensor([0.0, 1.0 + 1.0j]), torch.tensor([False, True])])
def test_ts_complex_or_bool(ts: torch.Tensor) -> None:
    # the imaginary part was dropped silently; booleans were read as 0 and 1
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(ts=\.\.\.\)` must hold real times; got dtype"):
        tidal.solve(decay, y0_2(), ts)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"controller": tidal.PIDController}, r"`solve\(controller=PIDController\)` needs an instance"),
    ({"adjoint": tidal.BacksolveAdjoint}, r"`solve\(adjoint=BacksolveAdjoint\)` needs an instance"),
])
def test_a_class_instead_of_an_instance(kwargs: dict, pattern: str) -> None:
    # the messages said "got ABCMeta"
    with pytest.raises(tidal.InvalidArgumentError, match=pattern):
        tidal.solve(decay, y0_2(), ts_01(), **kwargs)


def test_ts_not_convertible() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(ts=\.\.\.\)` must be a tensor"):
        tidal.solve(decay, y0_2(), "0 to 1")


def test_ts_as_python_floats_keep_float64() -> None:
    # a list went through float32 first: 0.1 became 0.10000000149..., 1e300 became inf
    sol = tidal.solve(decay, y0_2(), [0.0, 0.1], controller=tidal.PIDController(1e-12, 1e-14))
    assert sol.ts[-1].item() == 0.1
    assert sol.ys[-1, 0].item() == pytest.approx(math.exp(-0.1), rel=1e-11)
    far = tidal.solve(decay, y0_2(), (0.0, 1e300), throw=False)
    assert far.ts[-1].item() == 1e300 and far.status == tidal.Status.MAX_STEPS


@pytest.mark.parametrize(("y0_shape", "ts_shape"), [((3, 2), (4, 2)), ((2,), (3, 3)),
                                                     ((), (3, 1)), ((1, 4), (2, 4))])
def test_per_sample_ts_batch_mismatch(y0_shape: tuple, ts_shape: tuple) -> None:
    ts = torch.linspace(0, 1, ts_shape[0], dtype=F64).unsqueeze(-1).expand(ts_shape)
    b = ts_shape[1]
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`solve\(ts=\.\.\.\)` of shape .*B = {b} samples"):
        tidal.solve(decay, torch.ones(y0_shape, dtype=F64), ts)


# ---------------------------------------------------------------------------------------------
# y0 and f


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_y0_not_finite(bad: float) -> None:
    y0 = torch.tensor([[1.0, 2.0], [3.0, bad]], dtype=F64)
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(y0=\.\.\.\)` contains NaN or infinite values \(first at "
                             r"index \(1, 1\)"):
        tidal.solve(decay, y0, ts_01())


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex128])
def test_y0_bad_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(y0=\.\.\.\)` must have a real floating dtype"):
        tidal.solve(decay, torch.ones(2, dtype=dtype), ts_01())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_y0_half_precision_is_refused_by_name(dtype: torch.dtype) -> None:
    # float16 ended in a misleading NONFINITE failure, bfloat16 in a TypeError from numpy
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(y0=\.\.\.\)` must have a real floating dtype.*"
                             r"y0\.float\(\)"):
        tidal.solve(decay, torch.ones(2, dtype=dtype), ts_01())
    with pytest.raises(tidal.InvalidArgumentError, match=r"`sdeint\(y0=\.\.\.\)`"):
        tidal.sdeint(decay, decay, torch.ones(1, 2, dtype=dtype), ts_01(), dt=0.1)


@pytest.mark.parametrize("y0", [[1.0, 2.0], 1.0, (torch.ones(2),)])
def test_y0_not_a_tensor(y0: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(y0=\.\.\.\)` must be a torch"):
        tidal.solve(decay, y0, ts_01())


def test_f_not_callable() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(f=\.\.\.\)` must be callable"):
        tidal.solve(3.0, y0_2(), ts_01())


@pytest.mark.parametrize("per_sample", [False, True])
def test_f_wrong_shape(per_sample: bool) -> None:
    y0 = torch.ones(2, 3, dtype=F64)
    ts = ts_01().unsqueeze(-1).expand(2, 2) if per_sample else ts_01()
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"vector field f\(t, y\) returned shape \(2, 2\) for y of shape "
                             r"\(2, 3\)"):
        tidal.solve(lambda t, y: y[:, :2], y0, ts)


def test_f_wrong_dtype() -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"vector field f\(t, y\) returned dtype torch.float32 for y of dtype "
                             r"torch.float64"):
        tidal.solve(lambda t, y: -y.float(), y0_2(), ts_01())


@pytest.mark.parametrize("out", [1.0, [1.0, 2.0], None])
def test_f_returns_non_tensor(out: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"vector field f\(t, y\) must return a tensor.*returned "
                             + type(out).__name__):
        tidal.solve(lambda t, y: out, y0_2(), ts_01())


def test_f_and_args_that_do_not_fit_name_args() -> None:
    # a raw TypeError ("missing 1 required positional argument") came from inside the loop
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(f=\.\.\.\)` is called as f\(t, y\).*\(t, y, k\).*"
                             r"args=\.\.\."):
        tidal.solve(lambda t, y, k: -k * y, y0_2(), ts_01())
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(args=\.\.\.\)` is passed to f as its third argument"):
        tidal.solve(decay, y0_2(), ts_01(), args=2.0)
    with pytest.raises(tidal.InvalidArgumentError, match=r"`sdeint\(diffusion=\.\.\.\)`"):
        tidal.sdeint(decay, lambda t, y, k: k * y, torch.ones(1, 2, dtype=F64), ts_01(), dt=0.1)
    # what Python accepts is accepted: a default, *args, a closure, a module
    module = torch.nn.Linear(2, 2).double()
    for f in (lambda t, y, k=1.0: -k * y, lambda t, y, *rest: -y,
              lambda t, y: module(y), tidal.nn.MLP(2).double()):
        tidal.solve(f, y0_2(), ts_01())
    tidal.solve(lambda t, y, k: -k * y, y0_2(), ts_01(), args=2.0)


@pytest.mark.parametrize(("y0_shape", "ts"), [
    ((0,), [0.0, 1.0]),
    ((2, 0), [[0.0, 0.0], [1.0, 1.0]]),
    ((0, 2), torch.zeros(2, 0, dtype=F64)),
], ids=["shared-empty", "per-sample-empty-state", "per-sample-no-samples"])
def test_empty_state(y0_shape: tuple, ts) -> None:
    """Either a clean (empty) solution or an InvalidArgumentError naming y0, not a crash."""
    y0 = torch.ones(y0_shape, dtype=F64)
    try:
        sol = tidal.solve(decay, y0, torch.as_tensor(ts, dtype=F64))
    except tidal.InvalidArgumentError as error:
        assert "y0" in str(error)
    else:
        assert sol.ys.shape == (2, *y0_shape)


@pytest.mark.parametrize(("per_sample", "g"), [
    (False, lambda t, y: float(y[0] - 0.5)),
    (True, lambda t, y: 0.5),
    (True, lambda t, y: (y - 0.5).sum()),
    (True, lambda t, y: torch.ones(3, dtype=F64)),
], ids=["shared-float", "per-sample-float", "per-sample-0d", "per-sample-wrong-batch"])
def test_event_function_bad_output(per_sample: bool, g) -> None:
    y0 = torch.ones(2, 1, dtype=F64) if per_sample else y0_2()
    ts = ts_01().unsqueeze(-1).expand(2, 2) if per_sample else ts_01()
    with pytest.raises(tidal.InvalidArgumentError, match=r"(?i)event"):
        tidal.solve(decay, y0, ts, event=g)


# ---------------------------------------------------------------------------------------------
# Tolerances and controllers


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"rtol": -1e-3, "atol": 1e-6}, "rtol"),
    ({"rtol": 1e-3, "atol": -1e-6}, "atol"),
    ({"rtol": math.nan, "atol": 1e-6}, "rtol"),
    ({"rtol": 1e-3, "atol": math.nan}, "atol"),
    ({"rtol": torch.tensor([1e-3, -1e-3]), "atol": 1e-6}, "rtol"),
    ({"rtol": 1e-3, "atol": torch.tensor([1e-6, math.nan])}, "atol"),
])
def test_bad_tolerance(kwargs: dict, name: str) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`PIDController\({name}=.*`: {name} must be >= 0"):
        tidal.PIDController(**kwargs)


@pytest.mark.parametrize(("rtol", "atol"), [(0, 0), (0.0, 0.0),
                                            (torch.zeros(3), torch.zeros(3))])
def test_both_tolerances_zero(rtol: object, atol: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`PIDController\(rtol=0, atol=0\)`: at least one tolerance"):
        tidal.PIDController(rtol=rtol, atol=atol)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"rtol": math.inf, "atol": 1e-6}, "rtol"),
    ({"rtol": 1e-3, "atol": math.inf}, "atol"),
    ({"rtol": torch.tensor([1e-3, math.inf]), "atol": 1e-6}, "rtol"),
])
def test_infinite_tolerance(kwargs: dict, name: str) -> None:
    """rtol=inf would make the error scale inf * 0 = NaN where y = 0 (the solve then rejects
    every step until max_steps)."""
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`PIDController\({name}=.*`: {name} must be >= 0 and finite"):
        tidal.PIDController(**kwargs)


def test_tolerance_tensor_not_broadcastable() -> None:
    controller = tidal.PIDController(rtol=torch.full((3,), 1e-6), atol=1e-8)
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`PIDController\(rtol=tensor of shape \(3,\)\)` does not broadcast"):
        tidal.solve(decay, y0_2(), ts_01(), controller=controller)


@pytest.mark.parametrize(("solver", "pattern"), [
    ("dopri5", r"`solve\(solver='dopri5'\)` takes a solver object.*SOLVERS\['dopri5'\]\(\)"),
    ("foo", r"`solve\(solver='foo'\)` takes a solver object.*'dopri5'"),
    (tidal.Dopri5, r"`solve\(solver=Dopri5\)` needs an instance: solver=Dopri5\(\)"),
    (tidal.RK4, r"`solve\(solver=RK4\)` needs an instance"),
    (42, r"`solve\(solver=\.\.\.\)` must be a solver.*got int"),
])
def test_bad_solver(solver: object, pattern: str) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=pattern):
        tidal.solve(decay, y0_2(), ts_01(), solver=solver)


@pytest.mark.parametrize("solver", [tidal.Euler(), tidal.Midpoint(), tidal.RK4()])
def test_pid_with_fixed_step_solver(solver: tidal.ExplicitRungeKutta) -> None:
    with pytest.raises(tidal.IncompatibleOptionsError,
                       match=rf"`solve\(solver={type(solver).__name__}\(\), "
                             r"controller=PIDController\(\.\.\.\)\)`.*ConstantStepSize"):
        tidal.solve(decay, y0_2(), ts_01(), solver=solver,
                    controller=tidal.PIDController(1e-6, 1e-8))


def test_fixed_step_solver_without_controller() -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`solve\(solver=RK4\(\)\)` has no error estimate.*"
                             r"controller=tidal.ConstantStepSize"):
        tidal.solve(decay, y0_2(), ts_01(), solver=tidal.RK4())


def test_controller_wrong_type() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`solve\(controller=\.\.\.\)`.*got str"):
        tidal.solve(decay, y0_2(), ts_01(), controller="pid")


@pytest.mark.parametrize("dt", [0, 0.0, -0.1, math.nan, "0.1", None])
def test_constant_step_size_bad_dt(dt: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`ConstantStepSize\(dt={re.escape(repr(dt))}\)`: dt must be "
                             r"a positive"):
        tidal.ConstantStepSize(dt)


@pytest.mark.parametrize("name", ["step_ts", "jump_ts"])
@pytest.mark.parametrize("owner", [tidal.ConstantStepSize, tidal.PIDController])
def test_boundary_times_not_finite(name: str, owner: type) -> None:
    args = (0.1,) if owner is tidal.ConstantStepSize else (1e-6, 1e-8)
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`{owner.__name__}\({name}=\.\.\.\)` must hold finite times"):
        owner(*args, **{name: [0.5, math.inf]})


def test_step_to_empty() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`StepTo\(ts=\.\.\.\)` needs at least"):
        tidal.StepTo([])


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "10", None])
def test_bad_max_steps(n: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`solve\(max_steps={re.escape(repr(n))}\)` must be a positive "
                             r"integer"):
        tidal.solve(decay, y0_2(), ts_01(), max_steps=n)


@pytest.mark.parametrize(("name", "value"), [
    ("safety", 0.0), ("safety", -0.5), ("safety", 1.01), ("safety", math.nan),
    ("factor_min", 0.0), ("factor_min", 1.5), ("factor_min", -1.0),
    ("factor_max", 0.99), ("factor_max", math.nan),
    ("dt_min", -1e-3), ("dt_max", 0.0), ("dt_max", -1.0), ("dt0", 0.0), ("dt0", -0.1),
    ("safety", "0.9"),
])
def test_pid_ranges(name: str, value: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`PIDController\({name}={re.escape(repr(value))}\)`: {name} must "
                             r"lie in"):
        tidal.PIDController(1e-6, 1e-8, **{name: value})


@pytest.mark.parametrize(("name", "value"), [("safety", 1.0), ("factor_min", 1.0),
                                             ("factor_max", 1.0), ("dt_min", 0.0),
                                             ("factor_max", math.inf)])
def test_pid_range_edges_accepted(name: str, value: float) -> None:
    """The closed ends of the ranges in the messages are accepted (the checks are not off by
    one): the controller builds and a solve runs to the end."""
    controller = tidal.PIDController(1e-6, 1e-8, **{name: value})
    sol = tidal.solve(decay, y0_2(), ts_01(), controller=controller)
    assert torch.allclose(sol.ys[-1], torch.full((2,), math.exp(-1.0), dtype=F64), rtol=1e-4)


def test_pid_dt_min_above_dt_max() -> None:
    """Otherwise every step would be dt_max and accepted whatever its error."""
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`PIDController\(dt_min=0\.5, dt_max=0\.2\)`: dt_min must not "
                             r"exceed dt_max"):
        tidal.PIDController(1e-6, 1e-8, dt_min=0.5, dt_max=0.2)


@pytest.mark.parametrize("direction", [2, -2, 0.5, "up", None])
def test_event_bad_direction(direction: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=rf"`Event\(direction={re.escape(repr(direction))}\)` must be -1, 0 "
                             r"or \+1"):
        tidal.Event(lambda t, y: y[0], direction=direction)


@pytest.mark.parametrize("tol", [0.0, -1e-9, math.nan])
def test_event_bad_tol(tol: float) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`Event\(tol=.*\)` must be positive"):
        tidal.Event(lambda t, y: y[0], tol=tol)


def test_event_not_callable() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"`Event\(fn=\.\.\.\)` must be callable"):
        tidal.Event(1.0)


@pytest.mark.parametrize("per_sample", [False, True])
def test_evaluate_without_dense(per_sample: bool) -> None:
    y0 = torch.ones(2, 1, dtype=F64)
    ts = ts_01(3).unsqueeze(-1).expand(3, 2) if per_sample else ts_01(3)
    sol = tidal.solve(decay, y0, ts)
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`Solution.evaluate\(t\)` needs dense output.*dense=True"):
        sol.evaluate(0.5)


def test_evaluate_outside_span() -> None:
    sol = tidal.solve(decay, y0_2(), ts_01(3), dense=True)
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`Solution.evaluate\(t\)`: .* outside the solved span"):
        sol.evaluate(1.5)


# ---------------------------------------------------------------------------------------------
# odeint


def test_odeint_unknown_method() -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint\(method='rk45'\)` is not a known method; valid methods: "
                             r"\[.*'dopri5'.*'tsit5'.*\]"):
        tidal.odeint(decay, y0_2(), ts_01(), method="rk45")


def _listed_options(message: str) -> set[str]:
    listed = re.search(r"valid options for '\w+' are \[(.*)\]", message)
    assert listed is not None, message
    return {s.strip().strip("'") for s in listed.group(1).split(",")}


def test_odeint_unknown_option_adaptive() -> None:
    with pytest.raises(tidal.UnknownOptionError,
                       match=r"`odeint\(method='dopri5', options=\.\.\.\)` got unknown "
                             r"option\(s\) \['grid_constructor', 'stepsize'\]") as info:
        tidal.odeint(decay, y0_2(), ts_01(), method="dopri5",
                     options={"stepsize": 0.1, "grid_constructor": None, "safety": 0.8})
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)
    assert _listed_options(str(info.value)) == {
        "first_step", "safety", "ifactor", "dfactor", "max_num_steps", "step_t", "jump_t",
        "norm", "min_step", "max_step", "dtype"}


def test_odeint_unknown_option_fixed_step() -> None:
    with pytest.raises(tidal.UnknownOptionError,
                       match=r"`odeint\(method='rk4', options=\.\.\.\)` got unknown "
                             r"option\(s\) \['first_step'\]") as info:
        tidal.odeint(decay, y0_2(), ts_01(), method="rk4", options={"first_step": 0.1})
    assert isinstance(info.value, TypeError)
    assert _listed_options(str(info.value)) == {"step_size", "grid_constructor", "interp",
                                                "perturb", "max_num_steps", "norm"}


def test_odeint_unknown_option_default_method() -> None:
    with pytest.raises(TypeError, match=r"odeint\(method='dopri5', options=\.\.\.\)"):
        tidal.odeint(decay, y0_2(), ts_01(), options={"rtol": 1e-3})


@pytest.mark.parametrize("t", [[0.0, 1.0, 2.0], [0.0], [[0.0, 1.0]]])
def test_odeint_event_fn_needs_two_times(t: list) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint\(\.\.\., event_fn=\.\.\.\)` needs t = \[t0, t1\]"):
        tidal.odeint(decay, y0_2(), torch.tensor(t, dtype=F64), event_fn=lambda t, y: y[0] - 0.5)


def test_odeint_event_that_never_comes_fails_instead_of_searching_forever() -> None:
    """y' = -y never reaches -0.5: the search used to run towards t = inf for 2^31 steps (a
    hang); it now stops after tidal's default steps, or after `max_num_steps`."""
    calls = 0

    def counted_decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls > 20 * tidal.defaults.MAX_STEPS:  # the old behaviour: fail, do not hang
            raise RuntimeError("the event search did not stop")
        return -y

    never = lambda t, y: y[0] + 0.5  # noqa: E731
    with pytest.raises(tidal.SolveFailedError, match=r"MAX_STEPS.*max_num_steps") as info:
        tidal.odeint_event(counted_decay, y0_2(), torch.tensor(0.0, dtype=F64), event_fn=never)
    assert info.value.solution.stats.num_steps == tidal.defaults.MAX_STEPS
    with pytest.raises(tidal.SolveFailedError) as info:
        tidal.odeint(decay, y0_2(), ts_01(), event_fn=never, options={"max_num_steps": 30})
    assert info.value.solution.stats.num_steps == 30


@pytest.mark.parametrize("method", ["dopri5", "scipy_solver"])
def test_odeint_options_not_a_dict(method: str) -> None:
    # TypeError: 'int' object is not iterable, from inside tidal
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint\(options=\.\.\.\)` must be a dict.*got int"):
        tidal.odeint(decay, y0_2(), ts_01(), method=method, options=5)


def test_odeint_adjoint_params_and_options_of_the_wrong_kind() -> None:
    module = torch.nn.Linear(2, 2).double()
    field = lambda t, y: module(y)  # noqa: E731
    # AttributeError: 'float' object has no attribute 'requires_grad'
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint_adjoint\(adjoint_params=\.\.\.\)` must hold tensors"):
        tidal.odeint_adjoint(field, y0_2(), ts_01(), adjoint_params=[1.0])
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint_adjoint\(adjoint_options=\.\.\.\)` must be a dict"):
        tidal.odeint_adjoint(field, y0_2(), ts_01(), adjoint_params=(), adjoint_options=5)


@pytest.mark.parametrize(("method", "options", "pattern"), [
    # raw ValueError / TypeError from float(), the norm's call or the time list
    ("dopri5", {"safety": "x"}, r"`odeint\(options=\{'safety': 'x'\}\)` must be a number"),
    ("dopri5", {"norm": "max"}, r"`odeint\(options=\{'norm': 'max'\}\)` must be a function"),
    ("dopri5", {"jump_t": "0.5"}, r"`odeint\(options=\{'jump_t': '0\.5'\}\)` must be a seq"),
    ("explicit_adams", {"step_size": 0.1, "max_order": 0}, r"max_order=0.*from 1 to 12"),
])
def test_odeint_option_values_of_the_wrong_kind(method: str, options: dict, pattern: str) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=pattern):
        tidal.odeint(decay, y0_2(), ts_01(), method=method, options=options)


def test_odeint_empty_tuple_state() -> None:
    # torch.cat(): expected a non-empty list of Tensors
    with pytest.raises(tidal.InvalidArgumentError, match=r"`odeint\(y0=\(\)\)` is an empty"):
        tidal.odeint(lambda t, y: y, (), ts_01())


def test_odeint_fixed_step_event_needs_step_size() -> None:
    """Without step_size there is no grid to step along (torchdiffeq asks for step_size too)."""
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint\(method='euler', event_fn=\.\.\.\)`.*"
                             r"options=\{'step_size': dt\}"):
        tidal.odeint(decay, y0_2(), ts_01(), method="euler", event_fn=lambda t, y: y[0] - 0.5)


@pytest.mark.parametrize(("func", "pattern"), [
    (lambda t, y: y[0], r"must return a tuple of 2 tensors; got Tensor"),
    (lambda t, y: (y[0],), r"must return a tuple of 2 tensors; got tuple"),
    (lambda t, y: [y[0], y[1]], r"must return a tuple of 2 tensors; got list"),
    (lambda t, y: (y[0], y[1][:1]), r"returned shape \(1,\) for tuple element 1 of shape \(3,\)"),
])
def test_odeint_tuple_state_wrong_structure(func, pattern: str) -> None:
    y0 = (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(tidal.InvalidArgumentError, match=r"`odeint\(func=\.\.\.\)`.*" + pattern):
        tidal.odeint(func, y0, ts_01())


@pytest.mark.parametrize("y0", [[torch.ones(2)], (torch.ones(2), 1.0)])
def test_odeint_y0_not_tensor_or_tuple(y0: object) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint\(y0=\.\.\.\)` must be a tensor or a tuple of tensors"):
        tidal.odeint(decay, y0, ts_01())


@pytest.mark.parametrize(("y0", "rtol"), [
    ((torch.ones(2, dtype=F64), torch.ones(1, dtype=F64)), (1e-6,)),
    (torch.ones(2, dtype=F64), (1e-6, 1e-6)),
])
def test_odeint_tuple_tolerance_mismatch(y0: object, rtol: tuple) -> None:
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`odeint\(rtol=tuple\)` needs one tolerance per tuple element"):
        tidal.odeint(lambda t, y: y, y0, ts_01(), rtol=rtol)


# ---------------------------------------------------------------------------------------------
# ButcherTableau


def test_tableau_valid_baseline() -> None:
    """The inputs the failing cases below perturb form a valid tableau (Heun's method)."""
    tableau = tidal.ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2)
    assert tableau.num_stages == 2


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"c": (0.0, 1.0), "a": ((), (0.9,)), "b": (0.5, 0.5)},
     r"row 1 of `a` sums to 0\.9, not c\[1\] = 1\.0"),
    ({"c": (0.0, 0.5, 1.0), "a": ((), (0.5,), (0.5, 0.6)), "b": (0.2, 0.3, 0.5)},
     r"row 2 of `a` sums to"),
    ({"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.6)}, r"b sums to 1\.1, not 1"),
    ({"c": (0.0, 1.0), "a": ((), (0.5, 0.5)), "b": (0.5, 0.5)},
     r"row 1 of `a` must have 1 entries"),
    ({"c": (0.0, 1.0), "a": ((0.0,), (1.0,)), "b": (0.5, 0.5)},
     r"row 0 of `a` must have 0 entries"),
    ({"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (1.0,)}, r"c, a and b need one entry per stage"),
    ({"c": (0.5, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.5)}, r"an explicit method"
     r" starts at c\[0\] = 0; got 0\.5"),
    ({"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.5), "b_error": ((0.5, 0.4),),
      "error_order": 1}, r"each b_error row .* must sum to 0"),
    ({"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.5), "b_error": ((-0.5, 0.5),)},
     r"give both b_error and error_order"),
    ({"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.5), "dense": ((1.0,), (0.0,))},
     r"dense needs 3 rows"),
    ({"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.5),
      "dense": ((1.0, -0.5), (0.0, 0.5), (0.0, 0.1))}, r"dense row 2 gives w_2\(1\)"),
])
def test_tableau_validation(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=r"ButcherTableau: " + pattern):
        tidal.ButcherTableau(order=2, **kwargs)


# ---------------------------------------------------------------------------------------------
# Runtime failures


_WHERE = re.compile(r"at t=(?P<t>[-+0-9.e]+) with step size (?P<dt>\S+) after (?P<n>\d+) steps "
                    r"\((?P<acc>\d+) accepted, (?P<rej>\d+) rejected\)")


def test_max_steps_exceeded_raises_with_where_and_what_to_try() -> None:
    ts = torch.linspace(0.0, 10.0, 6, dtype=F64)
    with pytest.raises(tidal.SolveFailedError, match=r"Solve failed \(MAX_STEPS\)") as info:
        tidal.solve(decay, y0_2(), ts, max_steps=4)
    error = info.value
    message = str(error)
    assert error.status is tidal.Status.MAX_STEPS
    assert "max_steps=" in message
    where = _WHERE.search(message)
    assert where is not None, message
    assert int(where["n"]) == 4
    assert int(where["acc"]) + int(where["rej"]) == 4
    t_stop = float(where["t"])
    assert 0.0 < t_stop < 10.0
    # The partial solution travels with the error: reached rows correct, the rest NaN.
    sol = error.solution
    assert isinstance(sol, tidal.Solution)
    assert sol.status is tidal.Status.MAX_STEPS
    reached = ts <= t_stop
    assert bool(reached[0]) and not bool(reached.all())
    assert torch.isnan(sol.ys[~reached]).all()
    exact = torch.exp(-ts[reached]).unsqueeze(-1).expand(-1, 2)
    assert torch.allclose(sol.ys[reached], exact, rtol=1e-5)


def test_max_steps_exceeded_throw_false_returns_partial_solution() -> None:
    ts = torch.linspace(0.0, 10.0, 21, dtype=F64)
    sol = tidal.solve(decay, y0_2(), ts, max_steps=5, throw=False)
    assert sol.status is tidal.Status.MAX_STEPS
    assert not sol.status.ok
    assert sol.stats.num_steps == 5
    assert sol.ys.shape == (21, 2)
    finite = torch.isfinite(sol.ys).all(-1)
    # Reached outputs form a prefix; the unreached ones are NaN rows.
    n_reached = int(finite.sum())
    assert 1 <= n_reached < 21
    assert bool(finite[:n_reached].all())
    assert torch.isnan(sol.ys[n_reached:]).all()
    exact = torch.exp(-ts[:n_reached]).unsqueeze(-1).expand(-1, 2)
    assert torch.allclose(sol.ys[:n_reached], exact, rtol=1e-5)


def test_finite_time_blow_up() -> None:
    """y' = y^2, y(0) = 1 has y = 1 / (1 - t): it blows up at t = 1."""
    ts = torch.tensor([0.0, 0.5, 0.9, 2.0], dtype=F64)
    with pytest.raises(tidal.SolveFailedError) as info:
        tidal.solve(lambda t, y: y * y, torch.ones(1, dtype=F64), ts)
    error = info.value
    assert error.status in (tidal.Status.DT_UNDERFLOW, tidal.Status.MAX_STEPS)
    message = str(error)
    assert error.status.name in message
    assert "Try " in message
    where = _WHERE.search(message)
    assert where is not None, message
    assert float(where["t"]) == pytest.approx(1.0, abs=1e-3)
    sol = error.solution
    assert torch.allclose(sol.ys[:3, 0], 1.0 / (1.0 - ts[:3]), rtol=1e-5)
    assert torch.isnan(sol.ys[3]).all()


def _nan_after_half(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)


@pytest.mark.parametrize(("solver", "controller"), [
    (tidal.Dopri5(), None),
    (tidal.Tsit5(), tidal.PIDController(1e-8, 1e-10)),
    (tidal.RK4(), tidal.ConstantStepSize(0.125)),
    (tidal.Euler(), tidal.ConstantStepSize(0.125)),
], ids=["dopri5", "tsit5", "rk4-fixed", "euler-fixed"])
def test_nonfinite_vector_field(solver, controller) -> None:
    ts = torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=F64)
    with pytest.raises(tidal.SolveFailedError, match=r"\(NONFINITE\).*NaN or infinite") as info:
        tidal.solve(_nan_after_half, y0_2(), ts, solver=solver, controller=controller)
    assert info.value.status is tidal.Status.NONFINITE
    sol = tidal.solve(_nan_after_half, y0_2(), ts, solver=solver, controller=controller,
                      throw=False)
    assert sol.status is tidal.Status.NONFINITE
    assert torch.isnan(sol.ys[2:]).all()
    tol = 1e-3 if isinstance(solver, tidal.Euler) else 1e-5
    exact = torch.exp(-ts[:2]).unsqueeze(-1).expand(-1, 2)
    assert torch.allclose(sol.ys[:2], exact, rtol=tol * 50)
    where = _WHERE.search(str(info.value))
    assert where is not None
    assert float(where["t"]) < 0.75  # stopped before the first unreached output


def test_per_sample_one_failing_sample_does_not_stop_the_others() -> None:
    """y' = k y^2 with k = -1 (fine), 1 (blows up at t = 1), 0.25 (fine up to t = 4), and one
    sample whose vector field turns NaN after t = 0.6."""
    k = torch.tensor([-1.0, 1.0, 0.25, -1.0], dtype=F64)
    poisoned = torch.tensor([False, False, False, True])

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dy = k.unsqueeze(-1) * y * y
        return torch.where((poisoned & (t > 0.6)).unsqueeze(-1), math.nan, dy)

    ts = torch.linspace(0.0, 2.0, 5, dtype=F64).unsqueeze(-1).repeat(1, 4)
    ts[:, 2] = torch.linspace(0.0, -2.0, 5, dtype=F64)  # one reversed sample
    y0 = torch.ones(4, 1, dtype=F64)
    sol = tidal.solve(f, y0, ts, throw=False)
    assert sol.sample_status[0] is tidal.Status.SUCCESS
    assert sol.sample_status[1] in (tidal.Status.DT_UNDERFLOW, tidal.Status.MAX_STEPS)
    assert sol.sample_status[2] is tidal.Status.SUCCESS
    assert sol.sample_status[3] is tidal.Status.NONFINITE
    assert sol.status is sol.sample_status[1]  # the first failure
    exact = 1.0 / (1.0 - k * ts)  # y = 1 / (1 - k t)
    for b in (0, 2):
        assert torch.allclose(sol.ys[:, b, 0], exact[:, b], rtol=1e-5)
    # The failing samples: reached rows right, unreached rows NaN.
    assert torch.allclose(sol.ys[:2, 1, 0], exact[:2, 1], rtol=1e-5)
    assert torch.isnan(sol.ys[3:, 1]).all()
    assert torch.allclose(sol.ys[:2, 3, 0], exact[:2, 3], rtol=1e-5)
    assert torch.isnan(sol.ys[2:, 3]).all()
    # The good samples took as many steps as they do alone.
    alone = tidal.solve(lambda t, y: -y * y, y0[:1], ts[:, :1])
    assert int(sol.stats.num_steps[0]) == int(alone.stats.num_steps[0])

    with pytest.raises(tidal.SolveFailedError, match=r"for sample 1 at t=") as info:
        tidal.solve(f, y0, ts)
    assert info.value.status is sol.sample_status[1]
    assert info.value.solution.sample_status == sol.sample_status


def test_per_sample_max_steps() -> None:
    ts = torch.stack([torch.linspace(0, 1, 3, dtype=F64), torch.linspace(0, 200, 3, dtype=F64)],
                     1)
    sol = tidal.solve(decay, torch.ones(2, 1, dtype=F64), ts, max_steps=15, throw=False)
    assert sol.sample_status == (tidal.Status.SUCCESS, tidal.Status.MAX_STEPS)
    assert sol.status is tidal.Status.MAX_STEPS
    assert torch.allclose(sol.ys[:, 0, 0], torch.exp(-ts[:, 0]), rtol=1e-5)
    assert int(sol.stats.num_steps[1]) == 15
    assert torch.isnan(sol.ys[-1, 1]).all()
    with pytest.raises(tidal.SolveFailedError, match=r"\(MAX_STEPS\) for sample 1 .*max_steps="):
        tidal.solve(decay, torch.ones(2, 1, dtype=F64), ts, max_steps=15)


def test_odeint_max_num_steps_too_small() -> None:
    with pytest.raises(tidal.SolveFailedError, match=r"MAX_STEPS"):
        tidal.odeint(decay, y0_2(), torch.tensor([0.0, 50.0], dtype=F64),
                     options={"max_num_steps": 3})


# ---------------------------------------------------------------------------------------------
# A vector field that is NaN everywhere (issue 10: `odeint` used to run for minutes) ends the
# solve at once, on both grids, with fixed and adaptive steps; the message speaks of the field.


def _nan_everywhere(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y * math.nan


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
@pytest.mark.parametrize(("solver", "controller"), [
    (tidal.Dopri5(), None),
    (tidal.RK4(), tidal.ConstantStepSize(0.1)),
], ids=["adaptive", "fixed"])
def test_nan_field_ends_at_the_start(solver, controller, per_sample: bool) -> None:
    ts = torch.linspace(0.0, 1.0, 4, dtype=F64)
    y0 = torch.ones(3, 2, dtype=F64)
    if per_sample:
        ts = ts.unsqueeze(-1).repeat(1, 3)
    with pytest.raises(tidal.SolveFailedError, match=r"\(NONFINITE\)") as info:
        tidal.solve(_nan_everywhere, y0, ts, solver=solver, controller=controller)
    message = str(info.value)
    assert "f(t0, y0) is not finite" in message and "vector field" in message
    assert "max_steps" not in message
    sol = info.value.solution
    assert int(sol.stats.num_steps.max()) == 0  # no step was even tried
    assert int(sol.stats.num_fevals.max()) <= 2  # f(t0, y0) and the first-step trial
    assert torch.equal(sol.ys[0], y0) and torch.isnan(sol.ys[1:]).all()
    if per_sample:
        assert sol.sample_status == (tidal.Status.NONFINITE,) * 3


def test_nan_in_one_sample_does_not_stop_the_others() -> None:
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.tensor([[False], [True]]), math.nan, -y)

    ts = torch.linspace(0.0, 1.0, 3, dtype=F64).unsqueeze(-1).repeat(1, 2)
    sol = tidal.solve(f, torch.ones(2, 1, dtype=F64), ts, throw=False)
    assert sol.sample_status == (tidal.Status.SUCCESS, tidal.Status.NONFINITE)
    assert int(sol.stats.num_steps[1]) == 0
    assert torch.allclose(sol.ys[:, 0, 0], torch.exp(-ts[:, 0]), rtol=1e-6)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_odeint_nan_field_fails_at_once(method: str) -> None:
    """The reproduction of issue 10: torchdiffeq fails fast here, tidal used to hang."""
    options = {"step_size": 0.1} if method == "rk4" else None
    with pytest.raises(tidal.SolveFailedError, match=r"\(NONFINITE\)") as info:
        tidal.odeint(_nan_everywhere, torch.ones(2), torch.linspace(0.0, 1.0, 5),
                     method=method, options=options)
    assert int(info.value.solution.stats.num_steps) == 0


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_nan_after_a_while_ends_with_bounded_work(per_sample: bool) -> None:
    """NaN for t > 0.5: the solve creeps up to 0.5 (a long step may just have overshot) and
    ends there with NONFINITE after a bounded number of steps, far below max_steps."""
    ts = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    y0 = torch.ones(1, 2, dtype=F64) if per_sample else torch.ones(2, dtype=F64)
    sol = tidal.solve(_nan_after_half, y0, ts.unsqueeze(-1) if per_sample else ts, throw=False)
    assert sol.status is tidal.Status.NONFINITE
    assert int(sol.stats.num_steps.max()) < 300  # max_steps is 10,000
    assert torch.allclose(sol.ys[1].reshape(-1), torch.full((2,), math.exp(-0.25), dtype=F64))


def test_default_max_steps_is_finite() -> None:
    assert inspect.signature(tidal.solve).parameters["max_steps"].default \
        == tidal.defaults.MAX_STEPS == 10_000
    # 1e5 Euler steps would be needed: solve stops at the default, odeint at its
    # max_num_steps (torchdiffeq's 2^31 - 1 by default), and both say how to raise it.
    y0, t = torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(tidal.SolveFailedError, match=r"max_steps=n.*max_num_steps") as info:
        tidal.odeint(decay, y0, t, method="euler",
                     options={"step_size": 1e-5, "max_num_steps": tidal.defaults.MAX_STEPS})
    assert int(info.value.solution.stats.num_steps) == tidal.defaults.MAX_STEPS
    sol = tidal.solve(decay, y0, t, solver=tidal.Euler(), controller=tidal.ConstantStepSize(1e-5),
                      throw=False)
    assert sol.status is tidal.Status.MAX_STEPS
    assert int(sol.stats.num_steps) == tidal.defaults.MAX_STEPS


def test_controller_arguments_of_the_wrong_kind_are_named() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"PIDController\(rtol=.*torch\.tensor"):
        tidal.PIDController(rtol=[1e-3, 1e-3], atol=1e-6)
    with pytest.raises(tidal.InvalidArgumentError, match=r"StepTo\(ts=\.\.\.\)` must be one flat"):
        tidal.StepTo([[0.0, 1.0]])


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_a_user_norm_must_give_one_number_per_solve_or_sample(per_sample: bool) -> None:
    y0 = torch.ones(3, 2, dtype=F64)
    ts = torch.linspace(0.0, 1.0, 5, dtype=F64)
    ts = ts.unsqueeze(1).expand(-1, 3) if per_sample else ts
    unreduced = tidal.PIDController(1e-8, 1e-10, norm=lambda e: e.abs())
    with pytest.raises(tidal.InvalidArgumentError, match=r"norm=\.\.\.\)` must return one number"):
        tidal.solve(decay, y0, ts, controller=unreduced)
    reduced = tidal.PIDController(
        1e-8, 1e-10, norm=(lambda e: e.abs().amax(-1)) if per_sample else (lambda e: e.abs().max()))
    ys = tidal.solve(decay, y0, ts, controller=reduced).ys
    assert torch.allclose(ys[-1], torch.full_like(y0, math.exp(-1.0)), rtol=1e-7)


@pytest.mark.parametrize("options, named", [
    ({"first_step": 0}, "odeint(options={'first_step': 0.0})`: first_step must"),
    ({"ifactor": 0.5}, "odeint(options={'ifactor': 0.5})`: ifactor must"),
    ({"min_step": -1}, "odeint(options={'min_step': -1.0})`: min_step must"),
    ({"max_num_steps": 0}, "odeint(options={'max_num_steps': 0.0})` must be at least 1"),
    ({"rtol": -1.0}, "odeint(rtol=-1.0)`: rtol must be >= 0"),
])
def test_odeint_option_values_are_named_by_the_option(options: dict, named: str) -> None:
    y0, t = torch.ones(2, dtype=F64), torch.linspace(0.0, 1.0, 3, dtype=F64)
    options = dict(options)
    rtol = options.pop("rtol", 1e-7)
    with pytest.raises(tidal.InvalidArgumentError) as info:
        tidal.odeint(decay, y0, t, rtol=rtol, options=options)
    assert named in str(info.value) and "PIDController" not in str(info.value)


@pytest.mark.parametrize("grid", [None, [0.0, 0.7, 0.3, 1.0], [1.0, 0.5, 0.0]])
def test_a_grid_constructor_must_give_times_in_order(grid: list | None) -> None:
    y0, t = torch.ones(2, dtype=F64), torch.linspace(0.0, 1.0, 3, dtype=F64)
    with pytest.raises(tidal.InvalidArgumentError, match="grid_constructor"):
        tidal.odeint(decay, y0, t, method="rk4",
                     options={"grid_constructor": lambda f, y, t: grid})
    ys = tidal.odeint(decay, y0, t, method="rk4",
                      options={"grid_constructor": lambda f, y, t: torch.linspace(0, 1, 101)})
    assert torch.allclose(ys[-1], torch.full_like(y0, math.exp(-1.0)), rtol=1e-8)
