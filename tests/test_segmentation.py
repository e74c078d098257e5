"""Segmentation of long input: properties for any text, and where it chooses to cut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tts_service.segmentation import (
    CONTROL_TOKEN,
    MIN_SEGMENT_CHARS,
    Boundary,
    split_segments,
)
from tts_service.text_normalization import clean_text

CONTROL_TOKENS = ["[uv_break]", "[lbreak]", "[laugh]", "[break_6]", "[laugh_2]", "[oral_3]", "[speed_5]"]
# Pieces people write: words, Han runs, every punctuation mark the segmenter knows, spaces,
# line breaks, closing quotes, ChatTTS's control tokens and stray brackets.
PIECES = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=40),
    st.text(alphabet="今天气很好我们去公园散步吧你觉得怎么样", min_size=1, max_size=30),
    st.sampled_from(list("。！？；!?;…，、,：:.") + [" ", "  ", "\n", "”", "）", "[", "]", "3.5"]),
    st.sampled_from(CONTROL_TOKENS),
    st.text(min_size=1, max_size=5),  # anything at all, control characters included
)
TEXTS = st.lists(PIECES, min_size=0, max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=TEXTS, max_chars=st.integers(min_value=MIN_SEGMENT_CHARS, max_value=120))
def test_segments_rebuild_the_text_and_respect_the_maximum(text, max_chars):
    segments = split_segments(text, max_chars)
    assert "".join(s.text for s in segments) == text
    assert all(s.text for s in segments)
    assert all(len(s.text) <= max_chars for s in segments)
    assert [s.boundary for s in segments[-1:]] == ([Boundary.END] if text else [])


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, max_chars=st.integers(min_value=MIN_SEGMENT_CHARS, max_value=80))
def test_control_tokens_are_never_cut(text, max_chars):
    segments = split_segments(text, max_chars)
    starts, position = set(), 0
    for segment in segments:
        starts.add(position)
        position += len(segment.text)
    for token in CONTROL_TOKEN.finditer(text):
        assert not any(token.start() < cut < token.end() for cut in starts), (token.group(), segments)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS)
def test_the_service_segments_its_cleaned_input_losslessly(text):
    cleaned = clean_text(text)
    assert "".join(s.text for s in split_segments(cleaned, 100)) == cleaned


def test_whole_sentences_are_packed_and_cut_at_their_ends():
    sentence = "今天天气很好，我们去公园散步吧。"  # 16 characters
    segments = split_segments(sentence * 10, 50)
    assert [s.text for s in segments] == [sentence * 3] * 3 + [sentence]
    assert [s.boundary for s in segments] == [Boundary.SENTENCE] * 3 + [Boundary.END]


def test_a_sentence_too_long_is_cut_at_a_clause_then_between_words_then_anywhere():
    clause = split_segments("one two three four, five six seven eight nine ten.", 30)
    assert [s.text for s in clause] == ["one two three four, ", "five six seven eight nine ten."]
    assert clause[0].boundary is Boundary.CLAUSE
    words = split_segments("one two three four five six seven eight nine ten.", 20)
    assert [s.text for s in words][:2] == ["one two three four ", "five six seven "]
    assert {s.boundary for s in words[:-1]} == {Boundary.WORD}
    hard = split_segments("x" * 40, 16)
    assert [len(s.text) for s in hard] == [16, 16, 8] and hard[0].boundary is Boundary.HARD


def test_closing_quotes_and_following_spaces_stay_with_their_sentence():
    text = "“你好。”他说。 Then he left! Really?! Yes."
    cut = [s.text for s in split_segments(text, 16)]
    assert cut[0] == "“你好。”他说。 "
    assert cut[1:] == ["Then he left! ", "Really?! Yes."]
    assert "".join(cut) == text


def test_decimal_points_and_line_breaks():
    assert [s.text for s in split_segments("It costs 3.5 dollars today ok", 16)][0] == "It costs 3.5 "
    assert [s.text for s in split_segments("第一行没有标点\n第二行也没有任何标点", 16)] == [
        "第一行没有标点\n",
        "第二行也没有任何标点",
    ]


def test_a_maximum_below_the_longest_control_token_is_refused():
    with pytest.raises(ValueError, match="at least 16"):
        split_segments("text", MIN_SEGMENT_CHARS - 1)
