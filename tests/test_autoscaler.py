"""The scaling decision, table-driven, including scenarios that would flap without damping."""

from __future__ import annotations

import pytest
from tts_operator.autoscaler import Decision, Policy, Signal, State, classify_p99, decide
from tts_operator.spec import parse_spec

POLICY = Policy(
    min_replicas=1,
    max_replicas=4,
    p99_target_s=1.2,
    for_s=120,
    up_step=1,
    down_step=1,
    cooldown_s=60,
    stabilization_s=300,
)


def test_policy_from_spec_defaults():
    policy = Policy.from_spec(parse_spec({})["autoscaling"])
    assert policy == Policy(1, 4, 1.2, 120.0, 1, 1, 60.0, 300.0)


@pytest.mark.parametrize(
    ("current", "signal", "state", "now", "replicas", "reason"),
    [
        (2, Signal.HIGH, State(), 1000, 3, "scaled out 2 -> 3"),
        (4, Signal.HIGH, State(), 1000, 4, "already at maxReplicas"),
        (2, Signal.HIGH, State(last_scale_time=990), 1000, 2, "cooldown"),
        (2, Signal.HIGH, State(last_scale_time=900), 1000, 3, "scaled out"),
        (2, Signal.UNKNOWN, State(), 1000, 2, "no latency data"),
        (2, Signal.HOLD, State(), 1000, 2, "hysteresis"),
        (3, Signal.OK, State(last_high_time=900), 1000, 3, "stabilization"),
        (3, Signal.OK, State(last_high_time=600), 1000, 2, "scaled in 3 -> 2"),
        (3, Signal.OK, State(last_high_time=600, last_scale_time=980), 1000, 3, "cooldown"),
        (1, Signal.OK, State(), 1000, 1, "at minReplicas"),
        (0, Signal.UNKNOWN, State(), 1000, 1, "raised to minReplicas"),
        (9, Signal.UNKNOWN, State(), 1000, 4, "lowered to maxReplicas"),
    ],
)
def test_decisions(current, signal, state, now, replicas, reason):
    decision = decide(current, signal, POLICY, state, now)
    assert decision.replicas == replicas
    assert reason in decision.reason
    if decision.changed(current):
        assert decision.state.last_scale_time == now


def test_steps_are_capped_by_bounds():
    policy = Policy(1, 5, 1.2, 0, up_step=3, down_step=3, cooldown_s=0, stabilization_s=0)
    assert decide(4, Signal.HIGH, policy, State(), 0).replicas == 5
    assert decide(3, Signal.OK, policy, State(), 0).replicas == 1


def test_high_signal_records_last_high_time_even_without_scaling():
    decision = decide(4, Signal.HIGH, POLICY, State(), 500)
    assert decision.replicas == 4 and decision.state.last_high_time == 500


def run(signals: list[tuple[float, Signal]], start: int = 1) -> list[int]:
    replicas, state, history = start, State(), []
    for now, signal in signals:
        decision: Decision = decide(replicas, signal, POLICY, state, now)
        replicas, state = decision.replicas, decision.state
        history.append(replicas)
    return history


def test_alternating_signal_does_not_flap():
    # Latency bouncing between high and ok every 20 s for 10 minutes.
    signals = [(t, Signal.HIGH if (t // 20) % 2 == 0 else Signal.OK) for t in range(0, 600, 10)]
    history = run(signals)
    downs = sum(1 for a, b in zip(history, history[1:], strict=False) if b < a)
    assert downs == 0  # never scales in while it keeps coming back high
    assert history[-1] == 4  # ... and scaled out at most once per cooldown
    ups = [i for i, (a, b) in enumerate(zip(history, history[1:], strict=False)) if b > a]
    assert all((j - i) * 10 >= POLICY.cooldown_s for i, j in zip(ups, ups[1:], strict=False))


def test_sustained_load_then_quiet_scales_out_then_in_slowly():
    signals = [(t, Signal.HIGH) for t in range(0, 300, 10)] + [(t, Signal.OK) for t in range(300, 1500, 10)]
    history = run(signals)
    assert max(history) == 4
    first_down = next(i for i in range(1, len(history)) if history[i] < history[i - 1])
    assert signals[first_down][0] - 290 >= POLICY.stabilization_s  # not before the window passed
    assert history[-1] == 1


def test_classify_p99_with_for_and_hysteresis():
    state = State()
    signal, state = classify_p99(2.0, POLICY, state, 0)
    assert signal is Signal.HOLD and state.high_since == 0  # high, but not yet for 2 minutes
    signal, state = classify_p99(2.0, POLICY, state, 119)
    assert signal is Signal.HOLD
    signal, state = classify_p99(2.0, POLICY, state, 120)
    assert signal is Signal.HIGH
    signal, state = classify_p99(1.1, POLICY, state, 130)
    assert signal is Signal.HOLD and state.high_since is None  # below target, above 80 %
    signal, _ = classify_p99(0.5, POLICY, state, 140)
    assert signal is Signal.OK
    assert classify_p99(None, POLICY, state, 150)[0] is Signal.UNKNOWN
    assert classify_p99(float("nan"), POLICY, state, 150)[0] is Signal.UNKNOWN


def test_state_round_trips_through_status():
    state = State(last_scale_time=1.5, last_high_time=2.0, high_since=None)
    assert State.from_status(state.to_status()) == state
    assert State.from_status(None) == State()
