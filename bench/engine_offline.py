"""The engine alone, in-process, no HTTP: the physical limit the server can approach.

    .venv/bin/python bench/engine_offline.py --batch-sizes 1,2,4,8 --items 8      # env: TTS_* as for the server
    .venv/bin/python bench/engine_offline.py --serve     # stdin: one {"batch_size":8,"items":16} per line

The engine is created from the same ``TTS_*`` environment the server reads (so the same
engine, model, threads and token bounds), loaded and warmed up; then the same ``--items``
texts are synthesized in batches of each size in turn -- e.g. 8 single calls, then 4 calls
of 2, then one call of 8.  Prints one JSON object: items/s and audio-seconds/s per batch
size, and for ChatTTS the audio tokens each call generated.

``--serve`` keeps the loaded engine and answers one JSON line per request line, so the
suite can interleave short engine-alone windows with server windows: on a shared VM the
speed of the machine drifts by tens of percent within minutes, and only measurements
taken next to each other make a trustworthy ratio.  The suite runs this in its own
process so the model's memory and torch's threads are not shared with the load generator.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import corpus  # noqa: E402
from tts_service.engines import SynthesisItem, create_engine  # noqa: E402
from tts_service.settings import Settings  # noqa: E402


class Probe:
    """One loaded, warmed-up engine and a fixed list of texts to synthesize."""

    def __init__(self, corpus_name: str = "zh", join: int = 1, seed: int = 7) -> None:
        self.settings = Settings.from_env()
        self.engine = create_engine(self.settings)
        started = time.perf_counter()
        self.engine.load()
        self.engine.warmup()
        self.ready_s = time.perf_counter() - started
        self._corpus, self._join, self._seed = corpus_name, join, seed

    def run(self, batch_size: int, items: int) -> dict:
        """Synthesize ``items`` texts in calls of ``batch_size``; the figures of that run."""
        texts = ["，".join(corpus(self._corpus, self._join, self._seed + i)) for i in range(items)]
        work = [SynthesisItem(t, self.engine.resolve_voice(None, t)) for t in texts]
        tokens: list[int] = []
        audio = 0.0
        started = time.perf_counter()
        for first in range(0, len(work), batch_size):
            rows = self.engine.synthesize(work[first : first + batch_size])
            audio += sum(r.size for r in rows) / self.engine.sample_rate
            stats = getattr(self.engine, "last_batch", None)
            if stats is not None:
                tokens.extend(stats.tokens)
        seconds = time.perf_counter() - started
        return {
            "batch_size": batch_size,
            "items": len(work),
            "seconds": seconds,
            "items_per_second": len(work) / seconds,
            "audio_per_second": audio / seconds,
            "tokens": tokens,
        }

    def describe(self) -> dict:
        s = self.settings
        return {
            "engine": s.engine,
            "max_new_tokens": s.max_new_tokens,
            "min_new_tokens": s.min_new_tokens,
            "torch_threads": s.torch_threads,
            "load_and_warmup_seconds": self.ready_s,
            "corpus": self._corpus,
            "join": self._join,
        }

    def close(self) -> None:
        self.engine.close()


def measure(batch_sizes: list[int], items: int, corpus_name: str, join: int, seed: int) -> dict:
    probe = Probe(corpus_name, join, seed)
    try:
        results = [probe.run(size, items) for size in batch_sizes]
    finally:
        probe.close()
    return {**probe.describe(), "results": results}


def serve(corpus_name: str, join: int, seed: int) -> None:
    """Answer ``{"batch_size": b, "items": n}`` lines with :meth:`Probe.run`'s JSON until EOF."""
    probe = Probe(corpus_name, join, seed)
    print(json.dumps(probe.describe()), flush=True)
    try:
        for line in sys.stdin:
            if line.strip():
                ask = json.loads(line)
                print(json.dumps(probe.run(int(ask["batch_size"]), int(ask["items"]))), flush=True)
    finally:
        probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--items", type=int, default=8, help="texts synthesized at every batch size")
    parser.add_argument("--corpus", default="zh")
    parser.add_argument("--join", type=int, default=1, help="sentences per text (longer texts, more tokens)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serve", action="store_true", help="answer JSON requests on stdin (see above)")
    args = parser.parse_args()
    if args.serve:
        serve(args.corpus, args.join, args.seed)
        return
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(json.dumps(measure(sizes, args.items, args.corpus, args.join, args.seed)))


if __name__ == "__main__":
    main()
