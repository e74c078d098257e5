"""The scaling decision (a pure function): table cases, then scripted load traces.

The traces run the decision against a model of a batching TTS service -- demand computed the way
the operator's PromQL computes it (:mod:`tts_operator.promql`), from a queue whose p99 wait is short
until the engine nears saturation and unbounded past it, and pods that take minutes to become
ready -- for both signal paths: a polled demand, and alerts with Prometheus' ``for`` semantics.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from tts_operator.autoscaler import (
    Policy,
    Reading,
    State,
    alert_reading,
    combine,
    decide,
    recommend,
)
from tts_operator.promql import HIGH_ALERT, LOW_ALERT
from tts_operator.spec import duration_seconds, parse_spec

POLICY = Policy(
    min_replicas=1,
    max_replicas=10,
    tolerance=0.1,
    up_step=4,
    down_step=4,
    up_window_s=120,
    down_window_s=300,
    startup_timeout_s=600,
    settle_s=120,
)


def test_policy_from_spec_defaults():
    autoscaling = parse_spec({"autoscaling": {"enabled": True}})["autoscaling"]
    assert Policy.from_spec(autoscaling) == Policy(1, 4, 0.1, 4, 4, 120.0, 300.0, 600.0, 120.0)
    # A firing alert has already held for `for` in Prometheus: no second wait for scale-out.
    assert Policy.from_spec(autoscaling, alerts_only=True).up_window_s == 0


@pytest.mark.parametrize(
    ("demand", "ready", "current", "expected"),
    [
        (3.15, 3, 3, 3),  # within tolerance of the ready replicas: unchanged
        (2.85, 3, 3, 3),
        (6.0, 3, 3, 6),  # in proportion
        (3.0, 2, 4, 3),  # judged against the ready pods, not the desired ones
        (1.0, 5, 5, 1),
        (0.0, 5, 5, 1),  # idle: minReplicas
        (500.0, 2, 2, 10),  # maxReplicas
        (math.inf, 2, 2, 10),
        (4.0, 0, 2, 4),  # nothing ready (yet): against the desired count
        (2.1, 0, 2, 2),
    ],
)
def test_recommend(demand, ready, current, expected):
    assert recommend(demand, ready, current, POLICY) == expected


def covered(replicas: int, since: float) -> State:
    """A state whose history has recommended ``replicas`` steadily since ``since``, at resyncs
    that are not on any grid (every 14 s, from 7 s after ``since``)."""
    return State(recommendations=tuple((float(t), replicas) for t in range(int(since) + 7, 1000, 14)))


@pytest.mark.parametrize(
    ("current", "ready", "demand", "state", "replicas", "reason"),
    [
        (2, 2, 4.0, covered(4, 800), 4, "scaled out 2 -> 4"),
        (2, 2, 4.0, State(), 2, "waiting for it to stay high"),  # not watched for `for` yet
        (2, 2, 4.0, covered(4, 950), 2, "waiting for it to stay high"),  # high only 50 s
        (2, 2, 10.0, covered(10, 800), 6, "scaled out 2 -> 6"),  # step limit 4
        # Pods of the last scale-out are not ready yet: hold scale-out...
        (6, 2, 8.0, State(covered(8, 800).recommendations, 990, 990), 6, "starting pod"),
        # ... but not forever.
        (6, 2, 8.0, State(covered(8, 300).recommendations, 300, 300), 8, "scaled out 6 -> 8"),
        (6, 3, 1.5, covered(2, 600), 2, "scaled in 6 -> 2"),
        (6, 6, 1.2, covered(2, 600), 2, "scaled in 6 -> 2"),
        (8, 8, 0.8, covered(1, 600), 4, "scaled in 8 -> 4"),  # step limit 4
        (6, 6, 1.2, covered(2, 800), 6, "stabilization window"),  # low only 200 s of 300
        (6, 6, 1.2, covered(6, 600), 6, "stabilization window"),  # a high in the window
        (3, 3, 3.15, State(), 3, "within 10%"),
        (3, 3, None, covered(1, 0), 3, "no data"),  # blind: hold, also after a long low
        (3, 3, None, covered(10, 0), 3, "no data"),
        (0, 0, None, State(), 1, "raised to minReplicas"),
        (12, 12, None, State(), 10, "lowered to maxReplicas"),
    ],
)
def test_decisions(current, ready, demand, state, replicas, reason):
    decision = decide(current, ready, Reading(demand), POLICY, state, 1000)
    assert reason in decision.reason, decision.reason
    assert decision.replicas == replicas
    if decision.changed(current):
        assert decision.state.last_scale_time == 1000


def test_steady_alerts_hold_and_count_as_no_change():
    decision = decide(3, 3, Reading(None, steady=True), POLICY, covered(1, 600), 1000)
    assert decision.replicas == 3 and "alerts resolved" in decision.reason
    assert decision.state.recommendations[-1] == (1000, 3)  # "no change" enters the windows


def test_state_round_trips_through_status():
    state = State(((1.0, 2), (16.0, 3)), 16.0, 16.0, 20.0)
    assert State.from_status(state.to_status()) == state
    assert State.from_status(None) == State()


# -- alerts ------------------------------------------------------------------------------


def record(firing: bool, received: float, demand: float | None = None) -> dict:
    return {"firing": firing, "demand": demand, "receivedAt": received}


@pytest.mark.parametrize(
    ("alerts", "demand", "steady", "problem"),
    [
        (None, None, False, "no alert received"),
        ({HIGH_ALERT: record(True, 990, 2.5)}, 2.5, False, None),
        ({LOW_ALERT: record(True, 990, 0.3), HIGH_ALERT: record(False, 990)}, 0.3, False, None),
        ({HIGH_ALERT: record(False, 990), LOW_ALERT: record(False, 990)}, None, True, None),  # between: hold
        # Stale, firing or resolved alike: no data.
        ({HIGH_ALERT: record(True, 100, 2.5)}, None, False, "900s old"),
        ({LOW_ALERT: record(False, 100)}, None, False, "900s old"),
        ({HIGH_ALERT: record(True, 990)}, None, False, "carries no demand"),
        ({HIGH_ALERT: record(True, 990, math.nan)}, None, False, "carries no demand"),
    ],
)
def test_alert_reading(alerts, demand, steady, problem):
    reading = alert_reading(alerts, 1000, 60)
    assert (reading.demand, reading.steady) == (demand, steady)
    if problem:
        assert problem in reading.problem and not reading.known


def test_combine_takes_the_higher_known_demand():
    assert combine([Reading(0.5), Reading(2.0)]).demand == 2.0
    assert combine([Reading(None, "down"), Reading(0.5)]).demand == 0.5
    assert combine([Reading(None, steady=True), Reading(0.5)]).demand == 0.5
    assert combine([Reading(None, steady=True), Reading(None, "down")]).steady
    blind = combine([Reading(None, "prometheus down"), Reading(None, "no alert")])
    assert not blind.known and "prometheus down" in blind.problem and "no alert" in blind.problem


# -- scripted load traces ------------------------------------------------------------------

TICK_S = 15.0  # the operator's resync interval


def wait_p99(utilization: float) -> float:
    """p99 queue wait of a batching engine: about one batch (0.3 s at full use) until 90 % busy,
    then it climbs steeply; past saturation the queue grows without bound."""
    if utilization >= 1:
        return math.inf
    wait = 0.08 + 0.3 * utilization
    if utilization >= 0.9:
        wait += 5 * (utilization - 0.9) / (1 - utilization)
    return wait


def model_demand(load: float, ready: int, autoscaling: dict) -> float | None:
    """Demand as promql.demand_expression computes it (ratio x pods); ``load`` in pods' worth at
    full use."""
    if ready == 0:
        return None  # nothing scraped: blind
    per_pod = load / ready
    terms = [min(1.0, per_pod) / autoscaling["utilizationTarget"]]  # utilization
    if per_pod > 1:
        terms.append(per_pod)  # refused demand: (served + refused) / served
    if wait_p99(per_pod) > autoscaling["queueWaitTargetSeconds"]:
        terms.append((ready + 1) / ready)  # the target, breached
    return max(terms) * ready


@dataclass
class Step:
    time: float
    load: float
    ready: int
    replicas: int
    demand: float | None
    reason: str


def simulate(
    load_at: Callable[[float], float],
    minutes: float,
    *,
    mode: str = "poll",
    startup_s: float = 90,
    blind: Callable[[float], bool] = lambda t: False,
    **autoscaling,
) -> list[Step]:
    """Drive ``decide`` every resync against the model; pods become ready ``startup_s`` after they
    are created (scale-in removes those not ready first)."""
    spec = parse_spec({"autoscaling": {"enabled": True, "mode": mode, **autoscaling}})["autoscaling"]
    policy = Policy.from_spec(spec, alerts_only=mode == "alerts")
    tolerance, for_s = spec["tolerance"], duration_seconds(spec["for"])
    replicas = spec["minReplicas"]
    pods = [-math.inf] * replicas  # creation times; the first ones are up already
    state, pending, steps = State(), {}, []
    jitter = random.Random(1)
    now = 0.0
    while now < minutes * 60:
        ready = sum(1 for created in pods if now - created >= startup_s)
        # rate() over the 1-minute window: the load averaged over its last four scrapes.
        seen = sum(load_at(max(0.0, now - k * TICK_S)) for k in range(4)) / 4
        demand = None if blind(now) else model_demand(seen, ready, spec)
        if mode == "poll":
            reading = Reading(demand)
        else:  # Prometheus: an alert fires once its condition held for `for`; Alertmanager relays it
            conditions = {
                HIGH_ALERT: demand is not None and demand > (1 + tolerance) * ready,
                LOW_ALERT: demand is not None and demand < (1 - tolerance) * (ready - 1),
            }
            alerts = {}
            for name, holds in conditions.items():
                if holds:
                    pending.setdefault(name, now)
                else:
                    pending.pop(name, None)
                firing = holds and now - pending[name] >= for_s
                if not blind(now):  # blind: Alertmanager says nothing, the records go stale
                    alerts[name] = record(firing, now, demand if firing else None)
            previous = steps[-1].time if steps else now
            reading = alert_reading(alerts or {k: record(False, previous - 120) for k in conditions}, now, 60)
        decision = decide(replicas, ready, reading, policy, state, now)
        state = decision.state
        if decision.replicas > replicas:
            pods += [now] * (decision.replicas - replicas)
        pods = sorted(pods)[: decision.replicas]
        replicas = decision.replicas
        steps.append(Step(now, load_at(now), ready, replicas, demand, decision.reason))
        now += TICK_S + jitter.uniform(-3, 3)  # resyncs are not on a grid
    return steps


def changes(steps: list[Step]) -> list[Step]:
    return [b for a, b in zip(steps, steps[1:], strict=False) if b.replicas != a.replicas]


def needed(load: float, autoscaling_target: float = 0.8) -> int:
    return math.ceil(load / autoscaling_target)


MODES = [("poll", 90), ("poll", 240), ("alerts", 90), ("alerts", 240)]


@pytest.mark.parametrize(("mode", "startup_s"), MODES)
def test_square_wave_changes_replicas_at_most_twice_per_step(mode, startup_s):
    """Load alternates every 10 minutes between 1.2 and 5.5 pods' worth, for an hour."""
    low, high, half_period = 1.2, 5.5, 600

    def load(t: float) -> float:
        return high if (t // half_period) % 2 else low

    steps = simulate(load, 60, mode=mode, startup_s=startup_s, maxReplicas=10)
    assert all(1 <= s.replicas <= 10 for s in steps)
    for start in range(0, 3600, half_period):
        in_step = [s for s in steps if start <= s.time < start + half_period]
        moves = changes([steps[max(0, steps.index(in_step[0]) - 1)], *in_step])
        assert len(moves) <= 2, [(s.time, s.replicas, s.reason) for s in moves]
    # In proportion: each step ends on what its load needs at the 80 % utilization target.
    for start in range(half_period, 3600, half_period):
        end = next(s for s in reversed(steps) if s.time < start)
        assert end.replicas == needed(load(end.time)), (end.time, end.replicas, end.reason)


@pytest.mark.parametrize(("mode", "startup_s"), MODES)
def test_steady_load_never_oscillates(mode, startup_s):
    """An hour at 5.5 pods' worth with +-15 % noise: it converges, then never changes again."""
    rng = random.Random(7)
    noise = [rng.uniform(-0.15, 0.15) for _ in range(int(3600 / TICK_S) + 2)]
    steps = simulate(
        lambda t: 5.5 * (1 + noise[int(t // TICK_S)]), 60, mode=mode, startup_s=startup_s, maxReplicas=10
    )
    moves = changes(steps)
    before = [steps[steps.index(m) - 1] for m in moves]
    assert moves and all(m.replicas > b.replicas for b, m in zip(before, moves, strict=True)), "it scaled in"
    assert len(moves) <= 3, [(m.time, m.replicas) for m in moves]
    assert moves[-1].time < 20 * 60  # settled within 20 minutes, and stayed
    assert steps[-1].replicas in (needed(5.5), needed(5.5) + 1)


@pytest.mark.parametrize("mode", ["poll", "alerts"])
def test_replicas_stay_within_bounds(mode):
    def load(t: float) -> float:  # far beyond max capacity, then nothing at all
        return 100.0 if t < 1200 else 0.0

    steps = simulate(load, 40, mode=mode, minReplicas=2, maxReplicas=5)
    assert all(2 <= s.replicas <= 5 for s in steps)
    assert max(s.replicas for s in steps) == 5
    assert steps[-1].replicas == 2


@pytest.mark.parametrize("mode", ["poll", "alerts"])
def test_blind_holds_in_both_directions(mode):
    """No data for 15 minutes after a high phase, then after a scale-out: nothing changes."""

    def blind(t: float) -> bool:
        return 900 <= t < 1800

    steps = simulate(lambda t: 5.5 if t < 900 else 0.5, 45, mode=mode, blind=blind, maxReplicas=10)
    during = [s for s in steps if 900 <= s.time < 1800]
    assert len({s.replicas for s in during}) == 1, "replicas changed while blind"
    assert during[0].replicas == needed(5.5)
    assert all("no data" in s.reason or "minReplicas" in s.reason for s in during[1:])
    assert steps[-1].replicas < needed(5.5)  # and it scales in once it sees again


def test_a_scale_out_waits_for_starting_pods_instead_of_overshooting():
    """Pods take 4 minutes: while they start, the demand stays high -- the
    autoscaler must not keep adding pods for it."""
    steps = simulate(lambda t: 5.5, 20, startup_s=240, maxReplicas=20)
    assert max(s.replicas for s in steps) <= needed(5.5) + 1
    held = [s for s in steps if "starting pod" in s.reason]
    assert held, "the startup hold never engaged"
