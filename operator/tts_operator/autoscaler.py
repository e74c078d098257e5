"""The scaling decision: one pure function shared by alert-driven and polling modes.

Inputs are the current replica count, a latency signal, what happened before (kept in
the TTSService's ``status.autoscaler``), the spec's ``autoscaling`` block and the time.
Output is the desired replica count and a reason.  No I/O, no clock: tests drive it
with plain numbers.

How it avoids flapping:

* **hysteresis** -- in poll mode, p99 above target counts as *high* only after it stayed
  above for ``for`` (as the Prometheus alert does), and counts as *ok* only below 80 %
  of target; in between the signal is *hold* and nothing changes;
* **cooldown** -- no two scale steps closer than ``cooldownSeconds``;
* **stabilization** -- scale-in only after ``scaleDownStabilizationSeconds`` passed since
  the signal was last high (a resolved alert starts that window, a new firing resets it);
* **no data, no decision** -- an unknown signal (Prometheus down, no samples) never
  changes replicas; the caller reports why in a condition.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Any

from .spec import duration_seconds

OK_FRACTION = 0.8  # p99 must fall below this fraction of the target to count as "ok"


class Signal(enum.Enum):
    HIGH = "high"  # too slow (alert firing, or p99 > target for the whole `for`)
    OK = "ok"  # comfortably fast (alert resolved, or p99 < 80 % of target)
    HOLD = "hold"  # in between, or high for less than `for`: change nothing
    UNKNOWN = "unknown"  # no data: change nothing


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    p99_target_s: float
    for_s: float
    up_step: int
    down_step: int
    cooldown_s: float
    stabilization_s: float

    @classmethod
    def from_spec(cls, autoscaling: dict[str, Any]) -> Policy:
        return cls(
            min_replicas=autoscaling["minReplicas"],
            max_replicas=autoscaling["maxReplicas"],
            p99_target_s=float(autoscaling["p99TargetSeconds"]),
            for_s=duration_seconds(autoscaling["for"]),
            up_step=autoscaling["scaleUpStep"],
            down_step=autoscaling["scaleDownStep"],
            cooldown_s=float(autoscaling["cooldownSeconds"]),
            stabilization_s=float(autoscaling["scaleDownStabilizationSeconds"]),
        )


@dataclass(frozen=True)
class State:
    """What the autoscaler remembers between decisions (persisted in status.autoscaler)."""

    last_scale_time: float | None = None
    last_high_time: float | None = None  # last moment the signal was HIGH
    high_since: float | None = None  # poll mode: when p99 first went above target

    def to_status(self) -> dict[str, Any]:
        return {
            "lastScaleTime": self.last_scale_time,
            "lastHighTime": self.last_high_time,
            "highSince": self.high_since,
        }

    @classmethod
    def from_status(cls, status: dict[str, Any] | None) -> State:
        status = status or {}
        return cls(status.get("lastScaleTime"), status.get("lastHighTime"), status.get("highSince"))


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str
    state: State

    def changed(self, current: int) -> bool:
        return self.replicas != current


def classify_p99(p99_s: float | None, policy: Policy, state: State, now: float) -> tuple[Signal, State]:
    """Poll mode: turn a measured p99 into a signal, tracking how long it has been high."""
    if p99_s is None or math.isnan(p99_s):
        return Signal.UNKNOWN, state
    if p99_s > policy.p99_target_s:
        since = state.high_since if state.high_since is not None else now
        signal = Signal.HIGH if now - since >= policy.for_s else Signal.HOLD
        return signal, replace(state, high_since=since)
    signal = Signal.OK if p99_s < OK_FRACTION * policy.p99_target_s else Signal.HOLD
    return signal, replace(state, high_since=None)


def decide(current: int, signal: Signal, policy: Policy, state: State, now: float) -> Decision:
    """Desired replicas for ``current`` given ``signal``; see the module docstring."""
    if signal is Signal.HIGH:
        state = replace(state, last_high_time=now)

    def keep(reason: str) -> Decision:
        return Decision(current, reason, state)

    def scale(to: int, reason: str) -> Decision:
        return Decision(to, reason, replace(state, last_scale_time=now))

    if current < policy.min_replicas:
        return scale(policy.min_replicas, f"raised to minReplicas {policy.min_replicas}")
    if current > policy.max_replicas:
        return scale(policy.max_replicas, f"lowered to maxReplicas {policy.max_replicas}")
    if signal is Signal.UNKNOWN:
        return keep("no latency data: not scaling")
    if signal is Signal.HOLD:
        return keep("latency within hysteresis band or not high for long enough")
    in_cooldown = state.last_scale_time is not None and now - state.last_scale_time < policy.cooldown_s
    if signal is Signal.HIGH:
        if current >= policy.max_replicas:
            return keep(f"p99 above target but already at maxReplicas {policy.max_replicas}")
        if in_cooldown:
            return keep("p99 above target; waiting for the cooldown after the last scale")
        target = min(policy.max_replicas, current + policy.up_step)
        return scale(target, f"p99 above {policy.p99_target_s}s: scaled out {current} -> {target}")
    # Signal.OK
    if current <= policy.min_replicas:
        return keep("latency fine at minReplicas")
    if state.last_high_time is not None and now - state.last_high_time < policy.stabilization_s:
        return keep("latency fine; waiting for the scale-down stabilization window")
    if in_cooldown:
        return keep("latency fine; waiting for the cooldown after the last scale")
    target = max(policy.min_replicas, current - policy.down_step)
    return scale(target, f"latency fine for {policy.stabilization_s:g}s: scaled in {current} -> {target}")


def alert_signal(status: dict[str, Any], now: float, stale_s: float) -> tuple[Signal, str | None]:
    """Alerts mode: the signal the recorded Alertmanager alert gives, and why there is none."""
    alert = ((status.get("autoscaler") or {}).get("alert")) or None
    if alert is None:
        return Signal.UNKNOWN, "no p99 alert received from Alertmanager yet"
    if not alert.get("firing"):
        return Signal.OK, None
    age = now - float(alert.get("receivedAt") or 0)
    if age > stale_s:
        return Signal.UNKNOWN, (
            f"the firing p99 alert was last confirmed {age:.0f}s ago (Alertmanager silent?); "
            f"its repeat_interval must be below {stale_s:g}s"
        )
    return Signal.HIGH, None


def combine(signals: list[Signal]) -> Signal:
    """Both modes at once: any HIGH wins; otherwise OK only if every known signal is OK."""
    if Signal.HIGH in signals:
        return Signal.HIGH
    known = [s for s in signals if s is not Signal.UNKNOWN]
    if not known:
        return Signal.UNKNOWN
    return Signal.OK if all(s is Signal.OK for s in known) else Signal.HOLD
