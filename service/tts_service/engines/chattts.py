"""The production engine: ChatTTS (2noise/ChatTTS 0.2.5), weights from a local directory.

One engine call = one batched generation for all of the batch's texts.  Things this
module does deliberately, each because ChatTTS would otherwise get it wrong for a server:

- **Loading** goes through :mod:`.chattts_model` (clear errors for a missing or wrong
  file, each file hashed once at most and remembered in ``TTS_CACHE_DIR``, never
  ``source="local"``), with a FRESH ``Config`` per instance, modules built without random
  initialisation (:mod:`.chattts_startup`).  Warmup runs only the few tokens that make the
  first request cost what later ones do; the text path compiles nothing.
- **Fresh parameter objects per call.**  ``Chat.infer``'s default ``InferCodeParams`` /
  ``RefineTextParams`` are shared objects that ``infer`` mutates (``spk_smp``).
- **Normalization.**  Left to itself ChatTTS silently deletes digits and many symbols
  ("2024年5月1日" -> "年月日") and every question mark.  The service normalizes the text
  itself (its zh/en normalizer around the inline control tokens) and maps every character
  to the set ChatTTS accepts (:mod:`.chattts_text`); homophones are then replaced as ChatTTS's
  normalizer replaces them (:mod:`.chattts_homophones`, without its numba code).
- **Nothing to say, no audio.**  A row whose text maps to nothing ChatTTS can speak (only
  marks or emoji) is left out of the generation and gets empty audio: given an empty text the
  model would make up speech of its own.
- **Per-request controls.**  ``seed`` seeds torch's generator for the call (and it is
  reseeded from the OS afterwards, so unseeded calls stay random); ``temperature``,
  ``top_p``, ``top_k`` and the refine prompt (OpenAI's ``instructions``) go into the call's
  fresh parameter objects.  One call shares them all, so they are in the batch key.
- **The pipeline is driven stage by stage** -- ``_refine_text`` (optional),
  ``_infer_code``, ``_decode_to_wavs`` -- exactly as ``Chat._infer`` does for one
  unsplit batch, instead of through ``Chat.infer``, for two reasons:
  (1) a batch is padded to its longest row and the padding decodes to SOUND: a row that
  stopped after 9 tokens would come back as long as the longest row (2noise/ChatTTS#813).
  The generation result carries each row's own token count, so every row is trimmed to
  its own length (512 samples per audio token).  (2) ``infer`` drops every sample with
  |x| <= 1e-5 anywhere in the signal, shortening the audio unpredictably and clicking at
  the gaps; this path keeps every sample.  The ``chattts`` extra pins ChatTTS 0.2.5 so
  these stages are what they are; a test checks they exist.
- **Bounded generation, per row.**  Each row's token budget follows its own text's length
  (ChatTTS makes ~46.9 audio tokens per second of speech), capped by ``TTS_MAX_NEW_TOKENS``,
  so a runaway generation cannot hold the worker for minutes.  ChatTTS takes one
  ``max_new_token`` per batch, so the batch runs to its largest row budget and every row is
  cut at its own (a short row batched with a long one keeps only its own tokens, and its
  audio its own length); a row cut while still speaking is reported
  (:meth:`truncated_rows`).  ``close`` interrupts a running generation.
- **Memory.**  Everything runs under ``torch.inference_mode()`` and nothing is cached per
  call; a test checks RSS stays flat over hundreds of calls.

Batch-mates change the result (2noise/ChatTTS#256): a row's sampling depends on the
other rows of its batch.  Determinism is only promised for a request served alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..control_tokens import TOKEN_FORMS
from ..settings import TORCHINDUCTOR_CACHE_DIR_ENV, Settings
from ..text_normalization import TextNormalizer, detect_language
from . import (
    chattts_device,
    chattts_homophones,
    chattts_model,
    chattts_startup,
    chattts_text,
    chattts_voices,
)
from .base import (
    ENGINE_FIELDS,
    Engine,
    RequestRules,
    ResolvedVoice,
    StartupPhases,
    SynthesisItem,
    VoiceInfo,
)
from .failures import Failure
from .weight_hash_cache import WeightHashCache

if TYPE_CHECKING:
    from .chattts_decode_loop import ChatTTSDecodeLoop

log = logging.getLogger("tts_service.engines.chattts")

SAMPLES_PER_TOKEN = (
    512  # the decoder doubles each token into two mel frames; Vocos hop is 256 (46.875 tokens/s)
)
# Budget of audio tokens per input character at speed 1 (Mandarin ~4-5 characters per
# second of speech ~ 10 tokens each; English less), plus a floor for very short inputs.
TOKENS_PER_CHAR = 12
MIN_TOKEN_BUDGET = 48
# Streaming: samples of the last tokens are held back until more tokens (or the end) arrive.
STREAM_HOLDBACK_TOKENS = 2
# Warmup: a short text, and the fewest tokens that take a generation through every stage
# (prefill, steps, the decoder and the vocoder) at the shapes requests use.
WARMUP_TEXT = "热身一下。"
WARMUP_TOKENS = 2
# OpenAI's instructions, as ChatTTS can honour them: its refine-text prompt.
REFINE_PROMPT = r"(\[(?:oral_[0-9]|laugh_[0-2]|break_[0-7])\])+"


def speed_prompt(speed: float) -> str:
    """ChatTTS's ``[speed_N]`` (0-9, 5 = normal) for the API's speed (0.25-4, 1 = normal)."""
    return f"[speed_{min(9, max(0, round(5 + 2 * math.log2(speed))))}]"


def token_budget(text: str, speed: float, cap: int) -> int:
    """Audio tokens one row may generate: its own text's length, slower speech more."""
    return min(cap, MIN_TOKEN_BUDGET + math.ceil(TOKENS_PER_CHAR * len(text) / min(1.0, speed)))


@dataclass
class BatchStats:
    """What the last engine call did (for benchmarks and tests)."""

    size: int = 0
    tokens: list[int] = field(default_factory=list)  # each row's tokens (after its own budget)
    budgets: list[int] = field(default_factory=list)  # each row's budget
    truncated: list[int] = field(default_factory=list)  # rows cut at their budget
    max_new_token: int = 0  # the batch's: its largest row budget
    audio_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the call (benchmarks compare batched and single calls)


class ChatTTSEngine(Engine):
    """ChatTTS behind the batcher: one batched generation per engine call."""

    name = "chattts"
    has_decode_loop = True

    def __init__(
        self,
        settings: Settings,
        *,
        sha256_map: dict[str, str] | None = None,
    ) -> None:
        """``sha256_map`` replaces ChatTTS's official map (tests: the hashes of a generated
        checkpoint)."""
        self._settings = settings
        self.max_batch_size = settings.max_batch_size
        self._sha256_map = sha256_map
        self._specs = chattts_voices.voice_specs(settings.voices)
        self._aliases = chattts_voices.openai_aliases(list(self._specs))
        self._default = chattts_voices.resolve(
            settings.default_voice or next(iter(self._specs)), self._specs, self._aliases
        )
        self._chat: Any = None
        self._embeddings: chattts_voices.SpeakerEmbeddings | None = None  # once loaded
        self._normalizer: TextNormalizer | None = None
        self._homophones: chattts_homophones.Homophones | None = None
        self._startup = StartupPhases()
        self.weight_hashes = WeightHashCache(settings.cache_dir)  # verified files' sha256, kept
        self.device: Any = None
        self.last_batch = BatchStats()

    # -- voices (event loop: cheap, immutable data only) ---------------------------------

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(name, "zh+en", spec.description) for name, spec in self._specs.items()]

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def resolve_voice(self, requested: str | None, text: str) -> ResolvedVoice:
        name = chattts_voices.resolve(requested, self._specs, self._aliases) if requested else self._default
        return ResolvedVoice(name, detect_language(text))

    def speaker_voice(self, embedding: str, text: str) -> ResolvedVoice:
        chattts_voices.check_embedding(embedding, int(self._loaded().speaker.dim))
        return ResolvedVoice(chattts_voices.embedding_voice_id(embedding), detect_language(text), embedding)

    def request_rules(self) -> RequestRules:
        refine = self._settings.refine_text
        return RequestRules(
            self.name,
            fields=frozenset(f for f in ENGINE_FIELDS if f != "instructions" or refine),
            control_tokens=True,
            instructions=REFINE_PROMPT if refine else None,
            instructions_help=(
                "the chattts engine takes a refine-text prompt of [oral_N][laugh_N][break_N] "
                "(oral 0-9, laugh 0-2, break 0-7), e.g. '[oral_2][laugh_0][break_6]'"
                if refine
                else "the chattts engine honours instructions only as a refine-text prompt "
                "('[oral_2][laugh_0][break_6]'), and text refinement is off here (TTS_REFINE_TEXT); "
                f"inline control tokens in the text work without it: {TOKEN_FORMS}"
            ),
            voice_pattern=chattts_voices.SEED_VOICE.pattern,
            voice_pattern_help="any seed-N (N of up to ten digits)",
            max_embedding_chars=chattts_voices.MAX_EMBEDDING_CHARS,
        )

    def voice_forms(self) -> list[dict[str, object]]:
        return [*super().voice_forms(), *chattts_voices.REQUEST_VOICE_FORMS]

    def batch_key(self, item: SynthesisItem) -> Hashable:
        # One call's InferCodeParams (and seed) serve the whole batch: everything in them must be
        # shared -- the speaker, the speed prompt and the request's own sampling controls.
        return (item.voice.id, speed_prompt(item.speed), item.options)

    def cost(self, item: SynthesisItem) -> float:
        # The row's token budget (on the raw text: normalization changes it a little).
        return token_budget(item.text, item.speed, self._settings.max_new_tokens)

    # -- worker thread ---------------------------------------------------------------------

    def load(self) -> None:
        """Verify and load the weights; each phase is timed (:meth:`startup_phases`)."""
        phases = self._startup
        with phases.timed("imports"):  # torch, transformers and ChatTTS: most of a start on a CPU
            import torch
            from ChatTTS import Chat
            from ChatTTS.config import Config
            from transformers import LlamaModel

        s = self._settings
        asset = chattts_model.asset_dir(s.model_dir)
        geometry = chattts_model.load_geometry(s.chattts_config)
        torch.set_num_threads(s.torch_threads or chattts_device.container_cpus())
        self.device = chattts_device.select_device(torch, s.device)
        # ChatTTS logs per token at DEBUG, and one of those calls ("%d" with a tensor of several
        # rows) raises during a streamed batch; its logger never goes below INFO, even at TTS_LOG_LEVEL=DEBUG.
        chattts_log = logging.getLogger("ChatTTS")
        chattts_log.setLevel(max(logging.INFO, chattts_log.getEffectiveLevel()))
        chat = Chat(chattts_log)
        chat.config = chattts_model.fresh_config(Config(), geometry)
        if s.cache_dir:  # torch.compile's kernels next to the other caches, unless placed already
            os.environ.setdefault(TORCHINDUCTOR_CACHE_DIR_ENV, os.path.join(s.cache_dir, "torchinductor"))
        self._load_weights(torch, chat, asset, LlamaModel)
        with phases.timed("text_normalizer"):
            self._normalizer = TextNormalizer()
            self._homophones = chattts_homophones.Homophones(chat.normalizer.homophones_map)
        with phases.timed("cuda_memory_pool"):
            chattts_device.reserve_cuda_pool(torch, self.device, s.cuda_memory_pool_mb)
        self._embeddings = chattts_voices.SpeakerEmbeddings(self._specs, chat.speaker.std, chat.speaker.mean)
        self._chat = chat
        log.info(
            "ChatTTS loaded from %s on %s (%d torch threads; %d weight files hashed, %d remembered)",
            asset,
            self.device,
            torch.get_num_threads(),
            len(self.weight_hashes.hashed),
            len(chattts_model.MODEL_FILES) - len(self.weight_hashes.hashed) if s.model_verify else 0,
        )

    def _load_weights(self, torch: Any, chat: Any, asset: Any, pretrained_cls: Any) -> None:
        """Verify the files, then build ChatTTS's modules and load them (timed apart)."""
        s, phases = self._settings, self._startup
        with phases.timed("weight_verification"):
            expected = (
                self._sha256_map or chattts_model.load_sha256_map(s.model_sha256_file) or chat.sha256_map
            )
            chattts_model.verify(asset, expected, s.model_verify, self.weight_hashes)
        if s.compile and self.device.type != "cuda":
            log.warning("TTS_COMPILE is on but the device is %s: ChatTTS compiles on CUDA only", self.device)
        started = time.perf_counter()
        # Chat.load would hash every file again (its source="custom" check): its loader is
        # called directly, on the files verified above.
        with chattts_startup.lean_load(torch, pretrained_cls) as weight_seconds:
            loaded = chat._load(
                device=self.device,
                compile=s.compile,
                **chattts_model.model_paths(asset, dataclasses.asdict(chat.config.path)),
            )
        phases["module_construction"] = time.perf_counter() - started - weight_seconds[0]
        phases["weight_loading"] = weight_seconds[0]
        if not loaded:
            raise chattts_model.ModelError(
                f"TTS_MODEL_DIR={asset}: ChatTTS could not load the weights (see the log above)"
            )
        if s.half_precision:
            # ChatTTS casts the GPT's inputs to the Llama's dtype and its outputs back to float32.
            chat.gpt.gpt = chat.gpt.gpt.to(dtype=torch.float16)

    def startup_phases(self) -> dict[str, float]:
        return dict(self._startup)

    def first_call_counters(self) -> dict[str, int]:
        import torch

        return {
            **super().first_call_counters(),
            **chattts_startup.first_call_counters(torch, self.device, self._settings.compile),
        }

    def prepare_texts(self, items: Sequence[SynthesisItem]) -> list[str]:
        """The texts as ChatTTS's tokenizer will see them: normalized around their control
        tokens, in ChatTTS's characters (:mod:`.chattts_text`), homophones replaced as ChatTTS
        replaces them (:mod:`.chattts_homophones`: no numba code to compile)."""
        chat = self._loaded()
        normalizer, homophones = self._normalizer, self._homophones
        assert normalizer is not None and homophones is not None
        texts = []
        for item in items:
            text = chattts_text.for_chattts(item.text, item.voice.language, normalizer.normalize)
            if chat.normalizer._count_invalid_characters(text):
                # Not expected (for_chattts maps into ChatTTS's set): ChatTTS's own path maps and
                # deletes what it cannot say. normalized already: ChatTTS's pass would turn "?" into
                # "？" and delete it.
                text = chat.normalizer(text, False, True, item.voice.language)
            else:
                text = homophones.replace(text)
            texts.append(text)
        return texts

    def speaker_embedding(self, voice: ResolvedVoice) -> str:
        """The speaker embedding string of ``voice`` (named, seed-N, or given in the request)."""
        if voice.embedding is not None:
            return voice.embedding
        assert self._embeddings is not None, "loaded"
        return self._embeddings[voice.id]

    @property
    def settings(self) -> Settings:
        return self._settings

    def row_budget(self, text: str, speed: float) -> int:
        """One row's token budget, from its text as ChatTTS gets it."""
        return token_budget(text, speed, self._settings.max_new_tokens)

    def refine(self, texts: list[str], prompt: str | None, budget: int) -> list[str]:
        """ChatTTS's text refinement (``TTS_REFINE_TEXT``) with the request's prompt."""
        import torch
        from ChatTTS import Chat

        chat = self._loaded()
        with torch.inference_mode():
            params = Chat.RefineTextParams(
                prompt=prompt or "", show_tqdm=False, max_new_token=max(64, budget // 4)
            )
            refined = chat._refine_text(texts, chat.device, params)
            tokens = [ids[ids.less(chat.tokenizer.break_0_ids)] for ids in refined.ids]
            texts = chat.tokenizer.decode(tokens)
            refined.destroy()
        return texts

    def decode_loop(self) -> ChatTTSDecodeLoop:
        """Continuous batching: this engine's GPT decode loop driven row by row."""
        from .chattts_decode_loop import ChatTTSDecodeLoop  # imports torch: after load only

        return ChatTTSDecodeLoop(self)

    def warmup(self) -> None:
        """What the first request would pay for, with the fewest tokens (request scheduler).

        One generation of :data:`WARMUP_TOKENS` tokens decoded to audio (torch's first calls,
        the lazy imports on that path), and on CUDA one at the max batch size (the allocator's
        blocks for a full batch).  :meth:`first_call_counters` stay unchanged by the first
        request after it (a test checks).  The text path needs none: it compiles nothing.
        """
        item = SynthesisItem(WARMUP_TEXT, self.resolve_voice(None, WARMUP_TEXT))
        with self._startup.timed("warmup_generation"):
            self._generate([item], max_new_token=WARMUP_TOKENS)
        if self.device is not None and self.device.type == "cuda" and self.max_batch_size > 1:
            with self._startup.timed("warmup_full_batch"):
                self._generate([item] * self.max_batch_size, max_new_token=WARMUP_TOKENS)

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        texts, rows = self._speakable(items)
        audios = [np.zeros(0, dtype=np.float32) for _ in items]
        if rows:
            with self._releasing_memory_on_oom():
                made = self._generate([items[i] for i in rows], texts=[texts[i] for i in rows])
            for i, audio in zip(rows, made, strict=True):
                audios[i] = audio
        self._rows_were(rows)
        return audios

    def _speakable(self, items: Sequence[SynthesisItem]) -> tuple[list[str], list[int]]:
        """The texts as ChatTTS gets them, and the rows with something to speak.  A text with
        nothing ChatTTS can say (only marks, emoji) gets no audio: given an empty text, the model
        would make up speech of its own."""
        texts = self.prepare_texts(items)
        return texts, [i for i, text in enumerate(texts) if text]

    def _rows_were(self, rows: list[int]) -> None:
        """Report the last call's truncated rows by the caller's indices (``rows`` were generated)."""
        if not rows:  # nothing was generated: nothing from an earlier call is reported for this one
            self.last_batch = BatchStats()
        self.last_batch.truncated = [rows[j] for j in self.last_batch.truncated]

    @contextlib.contextmanager
    def _releasing_memory_on_oom(self):
        """After a CUDA out-of-memory error, hand torch's cached blocks back before the
        batcher retries the batch in halves, so the smaller batch finds the memory free."""
        try:
            yield
        except Exception as exc:
            if (
                self.device is not None
                and self.device.type == "cuda"
                and self.classify_failure(exc) is Failure.OUT_OF_MEMORY
            ):
                import torch

                torch.cuda.empty_cache()
            raise

    @staticmethod
    @contextlib.contextmanager
    def seeded(seed: int | None):
        """Seed torch's generators for one call (ChatTTS samples from the default ones), then
        reseed them from the OS so the calls after it are random again."""
        if seed is None:
            yield
            return
        import torch

        torch.manual_seed(seed)
        try:
            yield
        finally:
            torch.seed()

    def _prepare(
        self, items: Sequence[SynthesisItem], max_new_token: int | None, texts: list[str] | None = None
    ):
        """Texts (refined if enabled), fresh InferCodeParams and each row's budget for one batch."""
        from ChatTTS import Chat

        chat = self._loaded()
        self.last_batch = BatchStats()  # nothing from an earlier call is reported for this one
        first = items[0]
        options = first.options  # shared by the batch (batch_key)
        texts = self.prepare_texts(items) if texts is None else list(texts)
        s = self._settings
        budgets = [max_new_token or self.row_budget(text, first.speed) for text in texts]
        budget = max(budgets)
        chat.context.set(False)  # clear an interrupt() from an earlier shutdown attempt
        if s.refine_text:
            texts = self.refine(texts, options.refine_prompt, budget)
        params = Chat.InferCodeParams(
            prompt=speed_prompt(first.speed),
            spk_emb=self.speaker_embedding(first.voice),
            temperature=s.temperature if options.temperature is None else options.temperature,
            top_P=s.top_p if options.top_p is None else options.top_p,
            top_K=s.top_k if options.top_k is None else options.top_k,
            max_new_token=budget,
            # Per row: at least min(TTS_MIN_NEW_TOKENS, its own budget). ChatTTS's minimum is
            # batch-wide, so the batch runs to min(TTS_MIN_NEW_TOKENS, its largest budget) and each
            # row is then cut at its own budget (_decode).
            min_new_token=min(s.min_new_tokens, budget),
            show_tqdm=False,
        )
        return chat, texts, params, budgets

    def _decode(
        self, chat, result, budgets: list[int], rows: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Decode rows of a generation result (all by default), each cut at its own budget:
        one float32 array per decoded row, exactly its own samples."""
        rows = range(len(budgets)) if rows is None else rows
        return self.decode_hiddens(
            [result.hiddens[i][: min(int(result.hiddens[i].size(0)), budgets[i])] for i in rows]
        )

    def decode_hiddens(self, hiddens: list[Any]) -> list[np.ndarray]:
        """Audio of rows given their GPT hidden states ([tokens, hidden] each), decoded as one
        batch: one float32 array per row, exactly its own samples (none for a row of none)."""
        lengths = [int(h.size(0)) for h in hiddens]
        spoken = [j for j, n in enumerate(lengths) if n]
        audios = [np.zeros(0, dtype=np.float32) for _ in hiddens]
        if not spoken:
            return audios
        wavs = self._loaded()._decode_to_wavs([hiddens[j] for j in spoken], True)
        width, longest = wavs.shape[1], max(lengths)
        # A batch decodes padded to its longest row; padding decodes to sound (2noise/ChatTTS#813).
        for k, j in enumerate(spoken):
            end = max(0, width - SAMPLES_PER_TOKEN * (longest - lengths[j]))
            audios[j] = np.ascontiguousarray(wavs[k, :end], dtype=np.float32)
        return audios

    @staticmethod
    def _tokens(result, budgets: list[int]) -> list[int]:
        return [min(int(h.size(0)), b) for h, b in zip(result.hiddens, budgets, strict=True)]

    @staticmethod
    def _cut(result, budgets: list[int]) -> list[int]:
        """Rows that generated up to their budget without ending (cut while speaking)."""
        return [i for i, (h, b) in enumerate(zip(result.hiddens, budgets, strict=True)) if h.size(0) >= b]

    def _generate(
        self, items: Sequence[SynthesisItem], max_new_token: int | None = None, texts: list[str] | None = None
    ) -> list[np.ndarray]:
        import torch

        started = time.perf_counter()
        with self.seeded(items[0].options.seed):
            chat, texts, params, budgets = self._prepare(items, max_new_token, texts)
            with torch.inference_mode():
                result = next(chat._infer_code(texts, False, chat.device, True, params))
        with torch.inference_mode():
            cut, lengths = self._cut(result, budgets), self._tokens(result, budgets)
            rows = self._decode(chat, result, budgets)
            result.destroy()
        self._record(lengths, budgets, cut, sum(r.size for r in rows), started)
        return rows

    def synthesize_stream(
        self,
        items: Sequence[SynthesisItem],
        wanted: Callable[[int], bool] = lambda i: True,
        eager: Callable[[int], bool] = lambda i: True,
    ) -> Iterator[list[np.ndarray]]:
        """Chunks as ChatTTS generates (every ``stream_batch`` = 24 tokens, ~0.5 s of audio).

        Each step decodes the tokens so far of every row that is ``eager`` (its reader waits
        for it now) and sends what is new, holding back the last
        :data:`STREAM_HOLDBACK_TOKENS` tokens' worth of samples, which the next tokens still
        change (decoder and vocoder context); the final step sends the rest.  A row that is
        not eager (a later segment of a stream whose reader is still on an earlier one) is
        decoded once, at the end: decoding every row every 24 tokens costs the square of its
        length.  An item's chunks add up to exactly as many samples as :meth:`synthesize`
        would return for it.

        ``wanted`` is not consulted per row: ChatTTS 0.2.5 generates every row of a batch to
        the end, so a row nobody listens to keeps its slot until its batch-mates finish.  The
        worker closes this generator once no row is wanted, which stops the generation at
        the next step.
        """
        texts, rows = self._speakable(items)
        empty = np.zeros(0, dtype=np.float32)
        if not rows:
            self._rows_were(rows)
            yield [empty] * len(items)
            return
        spoken = [items[i] for i in rows]
        try:
            with self._releasing_memory_on_oom(), self.seeded(items[0].options.seed):
                for made in self._stream(spoken, lambda j: eager(rows[j]), [texts[i] for i in rows]):
                    chunks = [empty] * len(items)
                    for i, chunk in zip(rows, made, strict=True):
                        chunks[i] = chunk
                    yield chunks
        finally:
            self._rows_were(rows)

    def _stream(
        self, items: Sequence[SynthesisItem], eager: Callable[[int], bool], texts: list[str]
    ) -> Iterator[list[np.ndarray]]:
        import torch

        started = time.perf_counter()
        chat, texts, params, budgets = self._prepare(items, None, texts)
        n = len(items)
        empty = np.zeros(0, dtype=np.float32)
        sent = [0] * n
        latest: dict[int, np.ndarray] = {}  # rows decoded at the last step: their audio so far
        last = None  # the latest generation result (rows not decoded yet are decoded from it)
        with torch.inference_mode():
            for result in chat._infer_code(texts, True, chat.device, True, params):
                if last is not None:
                    last.destroy()
                last = result
                rows = [i for i in range(n) if eager(i)]
                latest = dict(zip(rows, self._decode(chat, result, budgets, rows), strict=True))
                chunks = [empty] * n
                for i, audio in latest.items():
                    ready = max(sent[i], audio.size - STREAM_HOLDBACK_TOKENS * SAMPLES_PER_TOKEN)
                    chunks[i], sent[i] = audio[sent[i] : ready], ready
                yield chunks
            assert last is not None, "ChatTTS yields at least its final result"
            cut, lengths = self._cut(last, budgets), self._tokens(last, budgets)
            rest = [i for i in range(n) if i not in latest]
            latest.update(zip(rest, self._decode(chat, last, budgets, rest), strict=True))
            last.destroy()
        ends = [latest[i].size for i in range(n)]
        self._record(lengths, budgets, cut, sum(ends), started)
        yield [latest[i][sent[i] :] for i in range(n)]

    def _record(
        self, lengths: list[int], budgets: list[int], cut: list[int], samples: int, started: float
    ) -> None:
        self.last_batch = BatchStats(
            size=len(lengths),
            tokens=lengths,
            budgets=budgets,
            truncated=cut,
            max_new_token=max(budgets),
            audio_seconds=samples / self.sample_rate,
            seconds=time.perf_counter() - started,
        )

    def truncated_rows(self) -> list[int]:
        return list(self.last_batch.truncated)

    def device_memory(self) -> tuple[int, int] | None:
        """CUDA memory held by torch (exported as tts_cuda_memory_*_bytes); None on a CPU."""
        if self.device is None or self.device.type != "cuda":
            return None
        import torch

        return torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device)

    def interrupt(self) -> None:
        if self._chat is not None:
            self._chat.interrupt()  # sets a flag ChatTTS's generation loop checks per token

    def _loaded(self):
        if self._chat is None:
            raise RuntimeError("the chattts engine is not loaded")
        return self._chat

    def close(self) -> None:
        if self._chat is not None:
            self._chat.unload()
            self._chat = None
