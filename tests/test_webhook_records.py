"""The webhook's record-keeping, as a pure function: duplicates and out-of-order
notifications never change what the autoscaler acts on."""

from __future__ import annotations

from tts_operator.webhook import alert_change, alert_record

STARTS = "2026-01-01T00:00:00Z"


def notification(
    status: str, starts: str = STARTS, ends: str = "2026-01-01T00:05:00Z", received: float = 1.0
):
    alert = {"status": status, "startsAt": starts, "endsAt": ends, "fingerprint": "f", "labels": {}}
    return {**alert_record(alert), "receivedAt": received}


def apply(old, record):
    change = alert_change(record, old)
    return old if change is None else {**(old or {}), **change}


def test_first_notification_is_recorded():
    record = notification("firing")
    assert alert_change(record, None) == record


def test_duplicate_firing_only_refreshes_received_at():
    first = notification("firing", received=1.0)
    state = apply(None, first)
    again = apply(state, notification("firing", received=9.0))
    assert again == {**state, "receivedAt": 9.0}
    assert {k: v for k, v in again.items() if k != "receivedAt"} == {
        k: v for k, v in state.items() if k != "receivedAt"
    }


def test_duplicate_resolved_writes_nothing():
    state = apply(apply(None, notification("firing")), notification("resolved"))
    assert alert_change(notification("resolved", received=5.0), state) is None


def test_older_notifications_never_overwrite_newer_ones():
    resolved = apply(apply(None, notification("firing")), notification("resolved"))
    stale_firing = notification("firing", starts="2025-12-31T23:00:00Z")
    assert alert_change(stale_firing, resolved) is None
    firing = apply(None, notification("firing"))
    stale_resolved = notification("resolved", starts="2025-12-31T00:00:00Z", ends="2025-12-31T00:10:00Z")
    assert alert_change(stale_resolved, firing) is None


def test_any_order_of_the_same_notifications_ends_in_the_same_state():
    import itertools

    notes = [
        notification("firing"),
        notification("firing", received=2.0),
        notification("resolved"),
        notification("firing", starts="2026-01-01T01:00:00Z", ends="0001-01-01T00:00:00Z"),
    ]
    finals = set()
    for order in itertools.permutations(notes):
        state = None
        for note in order:
            state = apply(state, note)
        finals.add((state["firing"], state["startsAt"], state["endsAt"]))
    assert finals == {(True, "2026-01-01T01:00:00Z", "")}


def test_a_repeated_firing_notification_refreshes_the_demand():
    def firing(demand: str, received: float):
        alert = {
            "status": "firing",
            "startsAt": STARTS,
            "endsAt": "2026-01-01T00:05:00Z",
            "fingerprint": "f",
            "labels": {},
            "annotations": {"demand": demand},
        }
        return {**alert_record(alert), "receivedAt": received}

    state = apply(None, firing("2.5", 1.0))
    assert state["demand"] == 2.5
    assert apply(state, firing("1.75", 9.0)) == {**state, "receivedAt": 9.0, "demand": 1.75}
    # A demand that is not a finite, non-negative number is no demand (the autoscaler then holds).
    for bad in ("NaN", "+Inf", "-1", "lots", ""):
        assert apply(state, firing(bad, 10.0))["demand"] is None
