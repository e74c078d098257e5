"""The scaling decision: one pure function, modelled on the HorizontalPodAutoscaler's algorithm.

Input is the signal as **demand** -- replicas' worth of load, ``pods x ratio`` of :mod:`.promql`
(None when there is no data) -- the replicas desired and ready now, what was recommended before
(kept in the TTSService's ``status.autoscaler``), the spec's ``autoscaling`` block and the time.
Output is the desired replica count and a reason.  No I/O, no clock: tests drive it with plain
numbers and scripted load.  Demand rather than a ratio because it does not depend on how many pods
there were when it was measured: an alert's value stays true while the pods it asked for start.

* **In proportion**: ``recommended = ceil(demand)`` -- HPA's ``ceil(ready x ratio)`` -- unchanged
  while demand is within ``tolerance`` (10 %) of the ready replicas, within ``[minReplicas,
  maxReplicas]``.
* **Stabilized, separately each way**: scale out only when every recommendation of the last
  ``for`` was above the current count (demand stayed high that long: an alert's ``for``), to
  the latest; scale in to the *highest* recommendation of the last
  ``scaleDownStabilizationSeconds`` -- a dip never removes replicas, a blip never adds them.  A
  window not yet covered by recommendations (a fresh start) counts as "no change".  A falling
  signal ramps down over its rate window, so a scale-in waits (at most ``for``) until the window's
  highest is also the latest ``for``'s: one step down, not one per recommendation leaving it.
* **Step limits**: at most ``scaleUpStep`` more or ``scaleDownStep`` fewer per decision.
* **Aware of pods still starting**: while fewer replicas are ready than desired after a scale-out,
  no further scale-out, until ``podStartupTimeoutSeconds`` passed (a GPU pod takes minutes; deciding
  from the replicas not yet serving would overshoot to the maximum).
* **Blind means hold**, in both directions: no data (Prometheus down, no or stale alerts) changes
  nothing; the caller reports why in a condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from .promql import HIGH_ALERT, LOW_ALERT
from .spec import duration_seconds

HISTORY_LIMIT = 200  # recommendations kept in status (one per resync, pruned to the longest window)


@dataclass(frozen=True)
class Reading:
    """The signal once: the demand, or None and why there is none; ``steady`` when the source says
    only "neither too high nor too low" (every alert resolved)."""

    demand: float | None
    problem: str | None = None
    steady: bool = False

    @property
    def known(self) -> bool:
        return self.demand is not None or self.steady


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    tolerance: float
    up_step: int
    down_step: int
    up_window_s: float
    down_window_s: float
    startup_timeout_s: float
    settle_s: float  # a falling signal's settling time (the alerts' `for`)

    @classmethod
    def from_spec(cls, autoscaling: dict[str, Any], *, alerts_only: bool = False) -> Policy:
        """``alerts_only``: a firing alert has already held for ``for`` in Prometheus, so its scale-out
        needs no second wait here."""
        return cls(
            min_replicas=autoscaling["minReplicas"],
            max_replicas=autoscaling["maxReplicas"],
            tolerance=float(autoscaling["tolerance"]),
            up_step=autoscaling["scaleUpStep"],
            down_step=autoscaling["scaleDownStep"],
            up_window_s=0.0 if alerts_only else duration_seconds(autoscaling["for"]),
            down_window_s=float(autoscaling["scaleDownStabilizationSeconds"]),
            startup_timeout_s=float(autoscaling["podStartupTimeoutSeconds"]),
            settle_s=duration_seconds(autoscaling["for"]),
        )


@dataclass(frozen=True)
class State:
    """What the autoscaler remembers between decisions (persisted in status.autoscaler)."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (time, replicas), oldest first
    last_scale_time: float | None = None
    last_scale_up_time: float | None = None
    low_since: float | None = None  # since when a scale-in has been pending

    def to_status(self) -> dict[str, Any]:
        return {
            "recommendations": [[t, n] for t, n in self.recommendations],
            "lastScaleTime": self.last_scale_time,
            "lastScaleUpTime": self.last_scale_up_time,
            "scaleInPendingSince": self.low_since,
        }

    @classmethod
    def from_status(cls, status: dict[str, Any] | None) -> State:
        status = status or {}
        history = tuple((float(t), int(n)) for t, n in status.get("recommendations") or ())
        return cls(
            history,
            status.get("lastScaleTime"),
            status.get("lastScaleUpTime"),
            status.get("scaleInPendingSince"),
        )


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str
    state: State
    recommended: int | None = None

    def changed(self, current: int) -> bool:
        return self.replicas != current


def recommend(demand: float, ready: int, current: int, policy: Policy) -> int:
    """Replicas for ``demand``: unchanged within the tolerance of the ready (else the desired)
    replicas, else ``ceil(demand)``."""
    base = ready if ready > 0 else current
    if base > 0 and abs(demand / base - 1.0) <= policy.tolerance:
        wanted = current
    else:
        wanted = math.ceil(demand) if math.isfinite(demand) else policy.max_replicas
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


def _window(history: tuple[tuple[float, int], ...], now: float, window_s: float, current: int) -> list[int]:
    """Recommendations within the window; ``current`` too when the history does not reach back to
    its start (not watched long enough: "no change" holds the window open)."""
    inside = [n for t, n in history if now - t <= window_s]
    if not history or history[0][0] > now - window_s:
        inside.append(current)
    return inside


def _remember(
    history: tuple[tuple[float, int], ...], now: float, recommended: int, keep_s: float
) -> tuple[tuple[float, int], ...]:
    """The history with ``recommended`` added, pruned to ``keep_s`` -- but keeping the newest entry
    older than that, the evidence that the longest window is covered (resyncs are not on a grid)."""
    history = (*history, (now, recommended))
    older = [entry for entry in history if now - entry[0] > keep_s]
    kept = older[-1:] + [entry for entry in history if now - entry[0] <= keep_s]
    return tuple(kept[-HISTORY_LIMIT:])


def decide(current: int, ready: int, reading: Reading, policy: Policy, state: State, now: float) -> Decision:
    """Desired replicas; see the module docstring."""

    def keep(reason: str, new_state: State = state, recommended: int | None = None) -> Decision:
        return Decision(current, reason, new_state, recommended)

    def scale(to: int, reason: str, new_state: State = state, recommended: int | None = None) -> Decision:
        up = to > current
        return Decision(
            to,
            reason,
            replace(
                new_state, last_scale_time=now, last_scale_up_time=now if up else new_state.last_scale_up_time
            ),
            recommended,
        )

    if current < policy.min_replicas:
        return scale(policy.min_replicas, f"raised to minReplicas {policy.min_replicas}")
    if current > policy.max_replicas:
        return scale(policy.max_replicas, f"lowered to maxReplicas {policy.max_replicas}")
    if not reading.known:
        return keep("no data: holding in both directions")
    if reading.demand is None:  # steady
        said = "alerts resolved"
        recommended = current
    else:
        said = f"demand {reading.demand:.2f} replicas"
        recommended = recommend(reading.demand, ready, current, policy)
    longest = max(policy.up_window_s, policy.down_window_s)
    history = _remember(state.recommendations, now, recommended, longest)
    remembered = replace(state, recommendations=history)
    if recommended > current:
        window = _window(history, now, policy.up_window_s, current)
        if min(window) <= current:
            return keep(
                f"{said}: waiting for it to stay high for {policy.up_window_s:g}s",
                remembered,
                recommended,
            )
        if (
            ready < current
            and state.last_scale_up_time is not None
            and now - state.last_scale_up_time < policy.startup_timeout_s
        ):
            return keep(
                f"{said}: waiting for {current - ready} starting pod(s) first",
                remembered,
                recommended,
            )
        # High all along the window (like an alert's `for`): go to what the load needs now.
        to = min(recommended, current + policy.up_step)
        return scale(
            to,
            f"{said} with {ready} ready: scaled out {current} -> {to}",
            remembered,
            recommended,
        )
    if recommended < current:
        target = max(_window(history, now, policy.down_window_s, current))
        if target >= current:
            return keep(
                f"{said}: waiting for the {policy.down_window_s:g}s scale-down stabilization window",
                replace(remembered, low_since=None),
                recommended,
            )
        # The window's highest recommendation is the safe level; while the higher ones of a falling
        # load (a rate window ramps down over its length) are still leaving it, wait for them --
        # for at most `settle_s` -- so that one step down is taken, not one per recommendation.
        low_since = state.low_since if state.low_since is not None else now
        recent = max(_window(history, now, policy.settle_s, current))
        if recent < target and now - low_since < policy.settle_s:
            return keep(
                f"{said}: scale-in to {target} pending while the signal settles",
                replace(remembered, low_since=low_since),
                recommended,
            )
        to = max(target, current - policy.down_step)
        return scale(
            to,
            f"{said} with {ready} ready: scaled in {current} -> {to}",
            replace(remembered, low_since=None),
            recommended,
        )
    return keep(
        f"{said}: within {policy.tolerance:.0%} of the {ready} ready" if reading.demand is not None else said,
        replace(remembered, low_since=None),
        recommended,
    )


def alert_reading(alerts: dict[str, Any] | None, now: float, stale_s: float) -> Reading:
    """Alerts mode: the demand the latest notifications carry.

    A firing High or Low alert gives its demand; both resolved means "between the two": steady
    (hold).  A record Alertmanager has not confirmed for ``stale_s`` -- firing or resolved -- is
    stale, and a stale or missing one is no data: nothing is decided on what Alertmanager may have
    stopped saying.
    """
    alerts = alerts or {}
    if not alerts:
        return Reading(None, "no alert received from Alertmanager yet")
    fresh = {name: a for name, a in alerts.items() if now - float(a.get("receivedAt") or 0) <= stale_s}
    if not fresh:
        age = now - max(float(a.get("receivedAt") or 0) for a in alerts.values())
        return Reading(
            None,
            f"the last alert notification is {age:.0f}s old (Alertmanager silent?); its repeat_interval "
            f"must be below {stale_s:g}s",
        )
    for name in (HIGH_ALERT, LOW_ALERT):
        alert = fresh.get(name)
        if alert and alert.get("firing"):
            demand = alert.get("demand")
            if not isinstance(demand, (int, float)) or not math.isfinite(demand) or demand < 0:
                return Reading(None, f"the firing {name} alert carries no demand annotation")
            return Reading(float(demand))
    return Reading(None, steady=True)


def combine(readings: list[Reading]) -> Reading:
    """Both modes at once: the higher known demand; steady if that is all there is; no data only
    if neither has any."""
    demands = [r.demand for r in readings if r.demand is not None]
    if demands:
        return Reading(max(demands))
    if any(r.steady for r in readings):
        return Reading(None, steady=True)
    return Reading(None, "; ".join(r.problem for r in readings if r.problem) or "no data")
