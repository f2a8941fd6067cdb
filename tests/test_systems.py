"""tidal.data.systems: vector fields against formulas written out by hand, `simulate` against
scipy's solve_ivp, and known properties of the systems (an invariant, fixed points, a period)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tidal
from tidal.data import SYSTEMS, System, Trajectories, simulate, toggle_switch_stable_states
from tidal.data.systems import ALIASES

scipy_integrate = pytest.importorskip("scipy.integrate")
scipy_optimize = pytest.importorskip("scipy.optimize")


def _toggle(y):
    u, v = y
    return [4 / (1 + v**3) - u, 4 / (1 + u**3) - v]


def _lotka_volterra(y):
    x, z = y
    return [1.5 * x - x * z, x * z - 3 * z]


def _pendulum(y):
    theta, omega = y
    return [omega, -9.81 * math.sin(theta) - 0.3 * omega]


def _van_der_pol(y):
    x, v = y
    return [v, (1 - x**2) * v - x]


def _lorenz(y):
    x, v, z = y
    return [10 * (v - x), x * (28 - z) - v, x * v - 8 / 3 * z]


def _ideal_pendulum(y):
    q, p = y
    return [p, -math.sin(q)]


def _mass_spring(y):
    q, p = y
    return [p, -q]


def _two_body(y):
    q1, q2, p1, p2 = y
    r3 = (q1 * q1 + q2 * q2) ** 1.5
    return [p1, p2, -q1 / r3, -q2 / r3]


REFERENCES = {"toggle-switch": _toggle, "lotka-volterra": _lotka_volterra,
              "damped-pendulum": _pendulum, "pendulum": _pendulum,
              "van-der-pol": _van_der_pol, "lorenz": _lorenz,
              "ideal-pendulum": _ideal_pendulum, "mass-spring": _mass_spring,
              "two-body": _two_body}


def test_registry_holds_the_documented_systems():
    # "rober" (stiff) is checked against scipy's Radau in test_stiff_solve.py
    assert set(SYSTEMS) == set(REFERENCES) | {"rober"}
    for name, system in SYSTEMS.items():
        assert system.name == ALIASES.get(name, name)
        assert len(system.bounds) == system.n_states
        assert len(system.initial_box) == system.n_states


def test_pendulum_keeps_its_meaning_and_the_undamped_one_is_hamiltonian():
    """"pendulum" (tidal 0.1's name) is still the damped pendulum, so old scripts and run
    directories keep their meaning; it has no energy. The ideal pendulum keeps its energy
    H = p^2/2 - cos q along simulated (noise-free) trajectories."""
    assert SYSTEMS["pendulum"] is SYSTEMS["damped-pendulum"]
    assert SYSTEMS["damped-pendulum"].hamiltonian is None
    with pytest.raises(tidal.InvalidArgumentError, match="ideal-pendulum"):
        SYSTEMS["pendulum"].energy(torch.zeros(2))
    data = simulate("ideal-pendulum", 4, n_obs=50, noise=0.0, seed=1)
    energies = [0.5 * v[:, 1] ** 2 - np.cos(v[:, 0]) for v in data.values]
    assert max(np.ptp(e) for e in energies) < 1e-7
    damped = simulate("damped-pendulum", 4, n_obs=50, noise=0.0, seed=1)
    assert all(e[-1] < e[0] - 0.1 for e in
               (0.5 * v[:, 1] ** 2 - 9.81 * np.cos(v[:, 0]) for v in damped.values))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_vector_field_matches_hand_written_formula(name):
    system = SYSTEMS[name]
    points = np.random.default_rng(0).uniform(-2.0, 3.0, size=(4, system.n_states))
    got = system.vector_field(torch.tensor(0.0), torch.from_numpy(points)).numpy()
    expected = [REFERENCES[name](p) for p in points]
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_zero_noise_simulation_matches_solve_ivp(name):
    system = SYSTEMS[name]
    data = simulate(name, 3, n_obs=(5, 8), noise=0.0, seed=1)
    assert data.ids == ("0", "1", "2") and data.state_names == system.state_names
    for times, values in zip(data.times, data.values):
        assert times[0] == system.default_t_span[0] and times[-1] < system.default_t_span[1]
        reference = scipy_integrate.solve_ivp(
            lambda t, y: REFERENCES[name](y), (times[0], times[-1]), values[0], t_eval=times,
            method="DOP853", rtol=1e-10, atol=1e-12)
        # Lorenz is chaotic: errors near tidal's rtol 1e-8 grow about e^(0.9 t) by t = 5.
        tolerance = 1e-5 if name == "lorenz" else 1e-6
        np.testing.assert_allclose(values, reference.y.T, rtol=tolerance, atol=tolerance)


def test_simulate_is_deterministic_and_draws_within_the_documented_ranges():
    data = simulate("toggle-switch", 6, n_obs=(3, 5), seed=7)
    assert data == simulate("toggle-switch", 6, n_obs=(3, 5), seed=7)
    assert data != simulate("toggle-switch", 6, n_obs=(3, 5), seed=8)
    assert all(3 <= len(t) <= 5 for t in data.times)
    clean = simulate("toggle-switch", 50, n_obs=2, noise=0.0, seed=7)
    y0 = clean.initial_states()
    assert (y0 >= 0).all() and (y0 <= 5).all()


def test_regular_grid():
    data = simulate("van-der-pol", 2, t_span=(1.0, 3.0), n_obs=5, irregular=False, seed=0)
    for times in data.times:
        np.testing.assert_allclose(times, [1.0, 1.5, 2.0, 2.5, 3.0])


def test_noise_has_the_requested_standard_deviation():
    clean = simulate("lotka-volterra", 20, t_span=(0, 3), noise=0.0, seed=2)
    noisy = simulate("lotka-volterra", 20, t_span=(0, 3), noise=0.1, seed=2)  # same draws
    values = np.concatenate(clean.values)
    residual = np.concatenate(noisy.values) - values
    expected = 0.1 * (values.max(axis=0) - values.min(axis=0))
    # about 600 samples per state: the standard deviation's estimate is within ~3%
    np.testing.assert_allclose(residual.std(axis=0), expected, rtol=0.15)
    assert abs(residual.mean(axis=0) / expected).max() < 0.2


def test_missing_entries_keep_every_row_observed():
    data = simulate("lorenz", 20, t_span=(0, 0.5), noise=0.0, missing=0.3, seed=3)
    masks = np.concatenate(data.masks)
    assert masks.any(axis=1).all()
    # blanked with probability 0.3, unless all three were: 0.3 - 0.3^3 / 3 = 0.291
    assert abs((~masks).mean() - 0.291) < 0.04


def test_lotka_volterra_conserves_its_invariant():
    data = simulate("lotka-volterra", 2, n_obs=40, noise=0.0, seed=4)
    for x, y in (v.T for v in data.values):
        invariant = x - 3 * np.log(x) + y - 1.5 * np.log(y)  # delta x - gamma ln x + ...
        # local tolerance 1e-8; the global error grows over the three cycles of (0, 10)
        np.testing.assert_allclose(invariant, invariant[0], rtol=1e-6)


def test_van_der_pol_period():
    crossing = scipy_integrate.solve_ivp(
        lambda t, y: _van_der_pol(y), (0, 60), [2.0, 0.0], method="DOP853", rtol=1e-11,
        atol=1e-11, events=lambda t, y: y[1] if t > 0 else 1.0)
    times = crossing.t_events[0]
    assert SYSTEMS["van-der-pol"].period == pytest.approx(times[-1] - times[-3], rel=1e-6)


def test_toggle_switch_stable_states_are_stable_fixed_points():
    states = toggle_switch_stable_states()
    assert states.shape == (2, 2)
    field = SYSTEMS["toggle-switch"].vector_field
    for state in states:
        y = torch.from_numpy(state)
        assert torch.allclose(field(torch.tensor(0.0), y), torch.zeros(2, dtype=torch.float64),
                              atol=1e-12)
        jacobian = torch.autograd.functional.jacobian(lambda y: field(torch.tensor(0.0), y), y)
        assert (torch.linalg.eigvals(jacobian).real < 0).all()
        np.testing.assert_allclose(scipy_optimize.fsolve(_toggle, state + 0.3), state,
                                   atol=1e-10)
    np.testing.assert_allclose(states[0], states[1][::-1], atol=1e-12)  # the u <-> v symmetry
    assert states[1, 0] > 3.9 and states[1, 1] < 0.1


def test_toggle_switch_without_bistability_is_an_error():
    with pytest.raises(tidal.InvalidArgumentError, match="1 stable state"):
        toggle_switch_stable_states(a=4.0, n=1.0)


def test_a_custom_system_simulates():
    decay = System("decay", ("x",), {"k": 2.0}, lambda t, y, p: -p["k"] * y, (0.0, 1.0),
                   ((1.0, 1.0),), ((0.0, 1.0),), None, "dx/dt = -k x")
    data = simulate(decay, 2, n_obs=4, noise=0.0)
    assert isinstance(data, Trajectories)
    np.testing.assert_allclose(data.values[0][:, 0], np.exp(-2.0 * data.times[0]), rtol=1e-7)
    with pytest.raises(TypeError):
        decay.params["k"] = 3.0  # read-only


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"system": "toggle"}, "unknown system; the built-in ones are toggle-switch"),
    ({"n_obs": 1}, "n_obs=1"),
    ({"n_obs": (5, 3)}, "low <= high"),
    ({"missing": 1.0}, r"missing=1.0"),
    ({"noise": -0.1}, "noise=-0.1"),
    ({"n_trajectories": 0}, "n_trajectories=0"),
    ({"t_span": (1.0, 1.0)}, "t0 < t1"),
])
def test_simulate_errors(kwargs, match):
    arguments = {"system": "pendulum", "n_trajectories": 2, **kwargs}
    with pytest.raises(tidal.InvalidArgumentError, match=match):
        simulate(**arguments)
