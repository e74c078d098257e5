"""Text normalization tables for Chinese and English."""

from __future__ import annotations

import pytest
from tts_service.text_normalization import (
    TextNormalizer,
    clean_text,
    detect_language,
    english_cardinal,
    split_sentences,
)


@pytest.fixture(scope="module")
def normalizer() -> TextNormalizer:
    return TextNormalizer()


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("123", "一百二十三"),
        ("13812345678", "幺三八幺二三四五六七八"),
        ("今天25℃", "今天二十五摄氏度"),
        ("增长了3.5%", "增长了百分之三点五"),
        ("2024-03-05", "二零二四年三月五日"),
        ("10:30开会", "十点三十分开会"),
        ("10：30开会", "十点三十分开会"),
        ("1,234,567元", "一百二十三万四千五百六十七元"),
        ("１，２３４元", "一千二百三十四元"),
        ("2024年5月1日", "二零二四年五月一日"),
        ("第1名。他说：你好", "第一名。他说：你好"),
    ],
)
def test_chinese(normalizer, text, spoken):
    assert normalizer.normalize(text, "zh") == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("I have 123 apples.", "I have one hundred and twenty three apples."),
        ("It is 25°C.", "It is twenty five degrees Celsius."),
        ("Growth was 3.5%.", "Growth was three point five percent."),
        ("Meet me at 10:30.", "Meet me at ten thirty."),
        ("I have 1,000 apples.", "I have one thousand apples."),
        ("It cost $1,200.50.", "It cost one thousand two hundred dollars and fifty cents."),
        ("It cost $1.", "It cost one dollar."),
        ("In 1001 nights.", "In one thousand one nights."),
        ("Hi there. How are you?", "Hi there. How are you?"),
    ],
)
def test_english(normalizer, text, spoken):
    assert normalizer.normalize(text, "en") == spoken


def test_english_dates_are_spoken_as_words(normalizer):
    spoken = normalizer.normalize("Due 2024-03-05.", "en")
    assert "march" in spoken.lower() and not any(ch.isdigit() for ch in spoken)


def test_language_is_detected_per_sentence_when_not_given(normalizer):
    assert normalizer.normalize("价格是123元。The price is 123.") == (
        "价格是一百二十三元。The price is one hundred and twenty three."
    )


@pytest.mark.parametrize(
    ("text", "language"),
    [("你好", "zh"), ("Hello", "en"), ("123", "zh"), ("你好 world", "zh"), ("Hello 你", "en"), ("!!!", "zh")],
)
def test_detect_language(text, language):
    assert detect_language(text) == language


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (105, "one hundred five"),
        (1000, "one thousand"),
        (1_234_567, "one million two hundred thirty four thousand five hundred sixty seven"),
        (2_000_000_001, "two billion one"),
    ],
)
def test_english_cardinal(n, words):
    assert english_cardinal(n) == words


def test_clean_text_drops_control_characters_and_folds_space():
    assert clean_text("a\x00b\x07c\u200b  d\r\n\n e") == "a b c d\ne"
    assert clean_text(" \x00\t ") == ""


def test_split_sentences():
    assert split_sentences("你好。今天好！Yes. No?\nNext") == ["你好。", "今天好！", "Yes.", "No?", "Next"]


def test_unparseable_sentence_falls_back_to_itself(normalizer):
    assert normalizer.normalize("😀", "zh") == "😀"
