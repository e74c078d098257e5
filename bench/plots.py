"""The suite's PNG plots (matplotlib, no screen): latency vs throughput, batch sizes, RSS over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from http_load import Point  # noqa: E402
from lifecycle import Slope  # noqa: E402

COLORS = {"batching on": "tab:blue", "batching off": "tab:orange"}


def _color(label: str) -> str:
    return next((c for key, c in COLORS.items() if label.startswith(key)), "tab:gray")


def _load(p: Point) -> str:
    """A load point's legend entry: "64 clients, mixed", "8 clients, streamed", "83/s open"."""
    return p.load + (f", {p.corpus}" if p.corpus != "zh" else "")


def latency_vs_throughput(engines: dict[str, list[Point]], out: Path) -> Path:
    """One panel per engine: p50 (solid) and p99 (dashed) latency against requests/s served,
    closed-loop sweep as lines, open-loop points as markers."""
    fig, axes = plt.subplots(1, len(engines), figsize=(6 * len(engines), 4.5), squeeze=False)
    for ax, (engine, points) in zip(axes[0], engines.items(), strict=True):
        for label in dict.fromkeys(p.label for p in points):
            mine = [p for p in points if p.label == label and p.served and not p.stream and p.corpus == "zh"]
            closed = sorted((p for p in mine if p.mode == "closed"), key=lambda p: p.concurrency)
            opened = [p for p in mine if p.mode == "open"]
            color = _color(label)
            if closed:
                ax.plot(
                    [p.rps for p in closed],
                    [p.pct(0.5) * 1000 for p in closed],
                    "-o",
                    color=color,
                    label=f"{label}: p50 (closed loop)",
                )
                ax.plot(
                    [p.rps for p in closed],
                    [p.pct(0.99) * 1000 for p in closed],
                    "--o",
                    color=color,
                    label=f"{label}: p99",
                    alpha=0.7,
                )
            if opened:
                ax.scatter(
                    [p.rps for p in opened],
                    [p.pct(0.99) * 1000 for p in opened],
                    marker="^",
                    color=color,
                    label=f"{label}: p99 (open loop)",
                    zorder=3,
                )
        ax.set_title(f"{engine}: latency vs throughput")
        ax.set_xlabel("requests/s served")
        ax.set_ylabel("latency, ms (log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def batch_sizes(engines: dict[str, list[Point]], out: Path) -> Path:
    """Share of engine calls by batch size (the service's histogram buckets) per load point."""
    fig, axes = plt.subplots(1, len(engines), figsize=(6 * len(engines), 4), squeeze=False)
    for ax, (engine, points) in zip(axes[0], engines.items(), strict=True):
        shown = [p for p in points if p.batches and p.label.startswith("batching on")]
        buckets = sorted({float(le) for p in shown for le in p.batch_sizes if le != "+Inf"})
        width = 0.8 / max(1, len(shown))
        for k, p in enumerate(shown):
            shares = [p.batch_sizes.get(str(le), 0.0) / p.batches for le in buckets]
            ax.bar([i + k * width for i in range(len(buckets))], shares, width, label=_load(p))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(buckets))])
        ax.set_xticklabels([f"≤{le:g}" for le in buckets])
        ax.set_title(f"{engine}, batching on: batch sizes")
        ax.set_xlabel("items per engine call")
        ax.set_ylabel("share of calls")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def rss_over_time(soak: Point, slope: Slope, warm_share: float, out: Path) -> Path:
    """The soak's RSS samples and the fitted line over its steady part."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t for t, _ in soak.rss_mb], [mb for _, mb in soak.rss_mb], lw=0.8, label="server RSS")
    t_end = soak.rss_mb[-1][0]
    ax.plot(
        [warm_share * t_end, t_end],
        [slope.start_mb, slope.end_mb],
        "r--",
        label=f"fit from {warm_share:.0%} of the run on: {slope.growth_percent:+.2f} %",
    )
    ax.set_title(f"soak: {soak.served} requests at {soak.rate:.3g}/s, RSS over time")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB")
    ax.set_ylim(0, max(mb for _, mb in soak.rss_mb) * 1.2)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
