"""Run in a fresh process by test_chattts_warmup.py: load the ChatTTS engine, warm up one
path (or none), then serve first requests and report the engine's first-call counters.

A fresh process matters: compilations and lazy imports are per process, so a warmup can
only be shown to have done its job where nothing ran before it.

    python warmup_probe.py CONFIG_JSON  ->  one JSON object on stdout
"""

from __future__ import annotations

import json
import sys

from tts_service.engines import SynthesisItem
from tts_service.engines.chattts import ChatTTSEngine
from tts_service.settings import Settings


def main() -> None:
    config = json.loads(sys.argv[1])
    engine = ChatTTSEngine(Settings(**config["settings"]))
    engine.load()
    loop = engine.decode_loop() if config["path"] == "continuous" else None
    if config["warmup"]:
        (loop or engine).warmup()
    report = {"phases": engine.startup_phases(), "requests": []}
    voice = engine.resolve_voice(None, "你好")
    texts = ["你好，今天天气不错。", "Hello there, 2024."]  # not the warmup's text, nor its length
    for text in texts:
        before = engine.first_call_counters()
        item = SynthesisItem(text, voice)
        if loop is None:
            engine.synthesize([item])
            for _ in engine.synthesize_stream([item]):
                pass
        else:
            loop.admit(1, item, stream=False, eager=lambda: True)
            loop.admit(2, item, stream=True, eager=lambda: True)
            while loop.rows:
                loop.step()
        report["requests"].append({"before": before, "after": engine.first_call_counters()})
    if config.get("chattts_normalizer"):  # ChatTTS's own text path: numba compiles it
        before = engine.first_call_counters()
        engine._loaded().normalizer("你好。", False, True, "zh")
        report["chattts_normalizer"] = {"before": before, "after": engine.first_call_counters()}
    engine.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
