"""The engine's homophone replacement gives exactly ChatTTS's own, without numba."""

from __future__ import annotations

import pytest
from tts_service.engines.chattts_homophones import Homophones


@pytest.fixture(scope="module")
def chattts_normalizer():
    from ChatTTS import Chat

    return Chat().normalizer  # ChatTTS's Normalizer, with its homophone map (no weights needed)


def test_every_pair_of_the_map_is_replaced_as_chattts_replaces_it(chattts_normalizer):
    homophones = Homophones(chattts_normalizer.homophones_map)
    keys = [chr(int(k)) for k in chattts_normalizer.homophones_map[0]]
    assert len(homophones) == len(keys) > 16_000
    for start in range(0, len(keys), 500):  # every key, inside ordinary text
        text = "我们今天" + "".join(keys[start : start + 500]) + "，好的。"
        ours = homophones.replace(text)
        assert ours == chattts_normalizer(text, False, True, "zh")
        assert ours != text  # something was replaced: the comparison is not vacuous


@pytest.mark.parametrize(
    "text",
    [
        "今天天气不错，我们去公园散步吧。",
        "粡為瀹滆摲",  # keys only, some of whose values are keys too: one pass, no chains
        "hello there, this is english. and some 中文 mixed in.",
        "[uv_break]你好[laugh]，世界[lbreak]",  # ChatTTS's control tokens pass through
        "",
    ],
)
def test_texts_come_out_as_chatttss_normalizer_makes_them(chattts_normalizer, text):
    homophones = Homophones(chattts_normalizer.homophones_map)
    assert homophones.replace(text) == chattts_normalizer(text, False, True, "zh")
