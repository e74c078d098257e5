"""ChatTTS's GPT decode loop, driven by us row by row: continuous batching.

``Chat.infer`` (and ``GPT.generate``) runs a batch until its longest row ends and takes no
row once it started.  Here every row is on its own: it joins with its own prefill, is
sampled with its own parameters (temperature, top-P/top-K, seed, minimum and budget of
tokens, speaker and speed prompt -- so rows of different requests share a step whatever
their voices and settings), and leaves the step it ends; its audio is decoded then.  One
:meth:`ChatTTSDecodeLoop.step` is one token for every active row, with one batched Llama
forward over the rows' padded KV cache (:mod:`.padded_kv`).

**The same tokens as ChatTTS.**  Each stage does what ``GPT.generate`` does for a row, with
the same tensor operations: the prefill over the prompt's embeddings (speaker applied), the
code embeddings of the last token summed over the VQ codebooks, the code heads, and the
logits pipeline -- temperature, repetition penalty over the last 16 tokens (1.05), top-P
then top-K (``min_tokens_to_keep=3``), the EOS token masked below the minimum, softmax,
multinomial; a row whose first token is EOS is sampled again (ChatTTS regenerates); a row
ends at the first step where any codebook gives EOS, or at its budget.  A row served alone
therefore gets exactly ChatTTS's tokens for the same seed (a test compares them).  A seeded
row samples from a generator of its own, so its tokens do not depend on its batch-mates'
random draws either; unseeded rows share torch's default generator, as in ChatTTS.

**Failures stay with their row.**  If a batched step raises, the cache is rolled back and
each row is stepped alone: a row that fails alone leaves with its error, the others carry
on (an out-of-memory batch also continues this way, one row at a time per step, until rows
leave).  A row whose prefill fails never joins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import DecodeLoop, StepOutput, SynthesisItem
from .failures import Failure
from .padded_kv import PaddedKV

if TYPE_CHECKING:
    import torch

    from .chattts import ChatTTSEngine

log = logging.getLogger("tts_service.engines.chattts")

# ChatTTS's stream_batch: a streamed row's audio is decoded every this many tokens.
STREAM_EVERY = 24
# ChatTTS's repetition penalty (InferCodeParams) and the window it looks back over.
REPETITION_PENALTY = 1.05
PENALTY_WINDOW = 16
# ChatTTS's top-P/top-K warpers keep at least this many candidates.
MIN_TOKENS_TO_KEEP = 3
# A row whose first token keeps coming out EOS is sampled again at most this often.
MAX_FIRST_DRAWS = 16


@dataclass(eq=False)
class Row:
    """One active row: its sampling parameters, what it generated, where its audio is."""

    id: int
    item: SynthesisItem
    stream: bool
    eager: Callable[[], bool]
    budget: int
    min_tokens: int
    temperature: Any  # [num_vq, 1] float32: ChatTTS's per-codebook temperature
    top_p: float | None
    top_k: int | None
    generator: Any  # a torch.Generator for a seeded row, else None (torch's default one)
    greedy: bool
    tokens: Any  # [budget, num_vq] long: the first ``n`` are its tokens
    hiddens: Any  # [budget, hidden] float32: the hidden state that produced each token
    length: int  # its real positions in the KV cache
    pending: Any = None  # [num_vq, vocab] logits of its next token, from its last forward
    pending_hidden: Any = None
    n: int = 0
    sent: int = 0  # samples a streamed row has sent
    cache: Any = None  # its prefill's KV cache until its first token is drawn (then the batch's)
    started: float = field(default_factory=time.perf_counter)


class ChatTTSDecodeLoop(DecodeLoop):
    """The active rows of one ChatTTS engine and their KV cache; worker thread only."""

    def __init__(self, engine: ChatTTSEngine) -> None:
        import torch

        self._torch = torch
        self._engine = engine
        self._chat = engine._loaded()
        gpt = self._chat.gpt
        self._gpt = gpt
        self._num_vq = int(gpt.num_vq)
        self._vocab = int(gpt.num_audio_tokens)
        self._eos = self._vocab - 1
        self._kv = PaddedKV()
        self._rows: list[Row] = []  # in the KV cache's row order
        self._joining: list[Row] = []  # prefilled, first token not drawn yet
        self._empty: list[int] = []  # admitted with nothing to speak: finish at the next step
        self.greedy = False  # tests: argmax instead of sampling

    @property
    def rows(self) -> int:
        return len(self._rows) + len(self._joining) + len(self._empty)

    def warmup(self) -> None:
        """Two short rows joining a step apart, run to their end: the loop's own shapes (a
        prefill, a join into the padded cache, batched steps, a leave) are compiled and
        allocated before the first request."""
        voice = self._engine.resolve_voice(None, "热身")
        self.admit(-1, SynthesisItem("热身一下。", voice), stream=False, eager=lambda: True)
        self.step()
        self.admit(-2, SynthesisItem("热身。", voice), stream=False, eager=lambda: True)
        while self.rows:
            self.step()

    # -- admission ---------------------------------------------------------------------------

    def admit(self, row: int, item: SynthesisItem, *, stream: bool, eager: Callable[[], bool]) -> None:
        torch = self._torch
        engine, chat, gpt = self._engine, self._chat, self._gpt
        text = engine.prepare_texts([item])[0]
        if not text:  # nothing ChatTTS can say: no audio (see ChatTTSEngine._speakable)
            self._empty.append(row)
            return
        settings = engine.settings
        options = item.options
        budget = engine.row_budget(text, item.speed)
        generator = None
        with torch.inference_mode():
            if options.seed is not None:
                generator = torch.Generator(device=gpt.device)
                if settings.refine_text:  # the refinement draws first, as in ChatTTS
                    with engine.seeded(options.seed):
                        text = engine.refine([text], options.refine_prompt, budget)[0]
                        generator.set_state(_default_generator_state(torch, gpt.device))
                else:
                    generator.manual_seed(options.seed)
            elif settings.refine_text:
                text = engine.refine([text], options.refine_prompt, budget)[0]
            spk_emb = engine.speaker_embedding(item.voice)
            from .chattts import speed_prompt

            input_ids, _, text_mask = chat.tokenizer.encode(
                chat.speaker.decorate_code_prompts([text], speed_prompt(item.speed), None, spk_emb),
                self._num_vq,
                prompt=None,
                device=gpt.device_gpt,
            )
            emb = chat.embed(input_ids, text_mask)
            chat.speaker.apply(emb, spk_emb, input_ids, chat.tokenizer.spk_emb_ids, gpt.device_gpt)
            length = int(input_ids.size(1))
            mask = torch.ones(1, length, dtype=torch.bool, device=input_ids.device)
            positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
            cache_position = torch.arange(length, device=input_ids.device)
            hidden, logits, cache = self._forward(emb, mask, positions, cache_position, None)
        temperature = settings.temperature if options.temperature is None else options.temperature
        new = Row(
            id=row,
            item=item,
            stream=stream,
            eager=eager,
            budget=budget,
            min_tokens=min(settings.min_new_tokens, budget),
            temperature=torch.tensor([temperature] * self._num_vq, device=gpt.device).view(-1, 1),
            top_p=settings.top_p if options.top_p is None else options.top_p,
            top_k=settings.top_k if options.top_k is None else options.top_k,
            generator=generator,
            greedy=self.greedy,
            tokens=torch.zeros(budget, self._num_vq, dtype=torch.long, device=gpt.device_gpt),
            hiddens=torch.zeros(budget, hidden.size(-1), dtype=torch.float, device=gpt.device),
            length=length,
            pending=logits,
            pending_hidden=hidden[0],
        )
        new.cache = cache  # joins the batch's cache after its first draw
        self._joining.append(new)

    def drop(self, row: int) -> None:
        """``row`` leaves now (its request was cancelled or failed elsewhere)."""
        self._empty = [r for r in self._empty if r != row]
        self._joining = [r for r in self._joining if r.id != row]
        keep = [i for i, r in enumerate(self._rows) if r.id != row]
        if len(keep) != len(self._rows):
            self._kv.keep(keep)
            self._rows = [self._rows[i] for i in keep]

    # -- one step ----------------------------------------------------------------------------

    def step(self) -> StepOutput:
        torch = self._torch
        out = StepOutput()
        empty = np.zeros(0, dtype=np.float32)
        for row in self._empty:
            out.finished[row] = empty
        self._empty = []
        if self._chat.context.get():  # interrupt(): every row ends where it is
            ending = [*self._rows, *self._joining]
            self._rows, self._joining, self._kv = [], [], PaddedKV()
            self._finish(ending, out)
            return out
        with torch.inference_mode():
            try:
                draws = self._advance(self._rows, self._kv, self._joining)
            except Exception as exc:
                draws = self._advance_alone(exc, out)
            ended = self._settle_draws(draws, out)
            self._stream(out)
            self._finish(ended, out)
        return out

    def _advance(self, rows: list[Row], kv: PaddedKV, joining: list[Row]) -> list[tuple[Row, Any]]:
        """One forward for ``rows`` (their cache ``kv``), then one draw for them and ``joining``.
        All or nothing: if it raises, ``kv`` and the rows are as they were before."""
        torch = self._torch
        q = self._num_vq
        pending = [(r.pending, r.pending_hidden) for r in joining]
        if rows:
            last = torch.stack([r.tokens[r.n - 1] for r in rows]).unsqueeze(1)  # [rows, 1, num_vq]
            gpt = self._gpt
            code_emb = [gpt.emb_code[j](last[:, :, j]).to(gpt.device) for j in range(q)]
            emb = torch.stack(code_emb, 3).sum(3)
            positions = torch.tensor([[r.length] for r in rows], device=last.device)
            cache_position = torch.arange(kv.length, kv.length + 1, device=last.device)
            try:
                hidden, logits, _ = self._forward(emb, kv.step_mask(), positions, cache_position, kv.cache)
            except BaseException:
                kv.rollback()  # some layers may have appended the step's position
                raise
            pending = [(logits[i * q : (i + 1) * q], hidden[i]) for i in range(len(rows))] + pending
        every = [*rows, *joining]
        if not every:
            return []
        try:
            ids = self._draw(every, torch.cat([p[0] for p in pending]))
        except BaseException:
            kv.rollback()
            raise
        if rows:
            kv.stepped()
        for r, (logits_r, hidden_r) in zip(every, pending, strict=True):
            r.pending, r.pending_hidden = logits_r, hidden_r
        for r in rows:
            r.length += 1
        return list(zip(every, ids, strict=True))

    def _advance_alone(self, error: Exception, out: StepOutput) -> list[tuple[Row, Any]]:
        """The batched step failed: step each row alone; those that fail alone leave."""
        log.warning(
            "a decode step of %d rows failed (%s: %s); stepping each row alone",
            len(self._rows) + len(self._joining),
            type(error).__name__,
            error,
        )
        failure = self._engine.classify_failure(error)
        if failure is Failure.DEVICE:
            raise error
        if failure is Failure.OUT_OF_MEMORY and self._gpt.device.type == "cuda":
            self._torch.cuda.empty_cache()  # hand cached blocks back before the rows go one by one
        draws: list[tuple[Row, Any]] = []
        singles = list(zip(self._rows, self._kv.split(), strict=True))
        survivors: list[tuple[Row, Any, int]] = []
        for row, (cache, length) in singles:
            kv = PaddedKV()
            kv.add(cache, length)
            try:
                draws += self._advance([row], kv, [])
            except Exception as exc:
                out.failed[row.id] = exc
                continue
            survivors.append((row, kv.cache, int(kv.length)))
        joining = []
        for row in self._joining:
            try:
                draws += self._advance([], PaddedKV(), [row])
                joining.append(row)
            except Exception as exc:
                out.failed[row.id] = exc
        self._kv = PaddedKV()
        self._rows = []
        for row, cache, length in survivors:
            self._kv.add(cache, length)
            self._rows.append(row)
        self._joining = joining
        return draws

    def _settle_draws(self, draws: list[tuple[Row, Any]], out: StepOutput) -> list[Row]:
        """Record each row's draw; return the rows that ended (EOS or budget)."""
        ended: list[Row] = []
        for row, (ids, end) in draws:
            if end:
                ended.append(row)
                continue
            row.hiddens[row.n] = row.pending_hidden
            row.tokens[row.n] = ids
            row.n += 1
            row.pending = row.pending_hidden = None
            if row.n >= row.budget:
                out.truncated.append(row.id)
                ended.append(row)
        gone = {id(r) for r in ended}
        for row in self._joining:  # their first token is in: their cache joins the batch's
            if id(row) not in gone:
                self._kv.add(row.cache, row.length)
                self._rows.append(row)
            row.cache = None
        self._joining = []
        if gone:
            keep = [i for i, r in enumerate(self._rows) if id(r) not in gone]
            self._kv.keep(keep)
            self._rows = [self._rows[i] for i in keep]
        return ended

    # -- sampling (ChatTTS's logits pipeline, per row) ----------------------------------------

    def _draw(self, rows: list[Row], logits: Any) -> list[tuple[Any, bool]]:
        """Each row's next token ids ([num_vq] long) and whether they end it, drawn as
        ``GPT.generate`` draws them (one device sync per step, for the end test)."""
        torch = self._torch
        q = self._num_vq
        logits = logits.float()
        logits /= torch.cat([r.temperature for r in rows])
        logits = self._penalize(rows, logits)
        logits = self._warp(rows, logits)
        below = [i for i, r in enumerate(rows) if r.n < r.min_tokens]
        if len(below) == len(rows):
            logits[:, self._eos] = -torch.inf
        for i in below if len(below) < len(rows) else ():
            logits[i * q : (i + 1) * q, self._eos] = -torch.inf
        scores = torch.nn.functional.softmax(logits, dim=-1)
        ids = self._sample(rows, scores).view(len(rows), q)
        ends = ids.eq(self._eos).any(1).tolist()
        draws = []
        for i, r in enumerate(rows):
            row_ids, ended = ids[i], ends[i]
            draw = 1
            while r.n == 0 and ended and draw < MAX_FIRST_DRAWS:  # ChatTTS regenerates an empty start
                row_ids = self._sample([r], scores[i * q : (i + 1) * q]).view(-1)
                ended, draw = bool(row_ids.eq(self._eos).any()), draw + 1
            draws.append((row_ids.to(r.tokens.device), ended))
        return draws

    def _penalize(self, rows: list[Row], logits: Any) -> Any:
        """ChatTTS's repetition penalty over each row's last 16 tokens (each codebook apart)."""
        torch = self._torch
        window = torch.full(
            (len(rows), self._num_vq, PENALTY_WINDOW), self._vocab, dtype=torch.long, device=logits.device
        )
        for i, r in enumerate(rows):
            seen = r.tokens[max(0, r.n - PENALTY_WINDOW) : r.n].t().to(logits.device)
            window[i, :, : seen.size(1)] = seen
        one_hot = torch.nn.functional.one_hot(window.view(len(rows) * self._num_vq, -1), self._vocab + 1)
        freq = one_hot.sum(1).narrow(1, 0, self._vocab)
        alpha = torch.pow(REPETITION_PENALTY, freq)
        scores = logits.contiguous()
        return torch.where(scores < 0, scores.multiply(alpha), scores.divide(alpha))

    def _warp(self, rows: list[Row], logits: Any) -> Any:
        """Top-P then top-K, by groups of rows that share them (transformers' own warpers)."""
        torch = self._torch
        groups: dict[tuple[float | None, int | None], list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault((r.top_p, r.top_k), []).append(i)
        for (top_p, top_k), members in groups.items():
            warpers = _warpers(top_p, top_k)
            if len(groups) == 1:
                for warper in warpers:
                    logits = warper(None, logits)
                return logits
            index = torch.tensor(
                [i * self._num_vq + j for i in members for j in range(self._num_vq)], device=logits.device
            )
            part = logits.index_select(0, index)
            for warper in warpers:
                part = warper(None, part)
            logits = logits.index_copy(0, index, part)
        return logits

    def _sample(self, rows: list[Row], scores: Any) -> Any:
        """One multinomial draw per codebook row: rows with a generator of their own draw from it,
        the others together from torch's default one (as ``GPT.generate`` does)."""
        torch = self._torch
        q = self._num_vq
        if all(r.generator is None and not r.greedy for r in rows):
            return torch.multinomial(scores, num_samples=1)
        ids = torch.empty(scores.size(0), 1, dtype=torch.long, device=scores.device)
        shared = [i for i, r in enumerate(rows) if r.generator is None and not r.greedy]
        if shared:
            index = torch.tensor([i * q + j for i in shared for j in range(q)], device=scores.device)
            ids.index_copy_(0, index, torch.multinomial(scores.index_select(0, index), num_samples=1))
        for i, r in enumerate(rows):
            part = scores[i * q : (i + 1) * q]
            if r.greedy:
                ids[i * q : (i + 1) * q] = part.argmax(-1, keepdim=True)
            elif r.generator is not None:
                ids[i * q : (i + 1) * q] = torch.multinomial(part, num_samples=1, generator=r.generator)
        return ids

    # -- the model -----------------------------------------------------------------------------

    def _forward(self, emb: Any, mask: Any, positions: Any, cache_position: Any, cache: Any):
        """The Llama over ``emb`` and the code heads on its output, with the arguments (and
        their dtypes) ``GPT.generate`` passes; returns the last position's hidden states
        [rows, hidden], its logits [rows * num_vq, vocab] and the cache."""
        torch = self._torch
        import torch.nn.utils.parametrize as P

        gpt = self._gpt
        dtype = gpt.gpt.dtype
        outputs = gpt.gpt(
            attention_mask=mask.to(gpt.device_gpt, dtype=dtype),
            position_ids=positions.to(gpt.device_gpt, dtype=dtype),
            past_key_values=cache,
            inputs_embeds=emb.to(gpt.device_gpt, dtype=dtype),
            use_cache=True,
            output_attentions=False,
            cache_position=cache_position.to(gpt.device_gpt, dtype=dtype),
        )
        hidden_states = outputs.last_hidden_state.to(gpt.device, dtype=torch.float)
        with P.cached():
            logits = torch.empty(
                hidden_states.size(0),
                hidden_states.size(1),
                self._vocab,
                self._num_vq,
                dtype=torch.float,
                device=gpt.device,
            )
            for q in range(self._num_vq):
                logits[..., q] = gpt.head_code[q](hidden_states)
        logits = logits.narrow(1, -1, 1).squeeze_(1).float().permute(0, 2, 1)
        logits = logits.reshape(-1, logits.size(2))
        return hidden_states[:, -1], logits, outputs.past_key_values

    # -- audio ---------------------------------------------------------------------------------

    def _stream(self, out: StepOutput) -> None:
        """Every STREAM_EVERY tokens, a streamed row whose reader waits sends its new audio."""
        due = [r for r in self._rows if r.stream and r.n and r.n % STREAM_EVERY == 0 and r.eager()]
        if not due:
            return
        from .chattts import SAMPLES_PER_TOKEN, STREAM_HOLDBACK_TOKENS

        for row, audio in zip(due, self._decode(due), strict=True):
            ready = max(row.sent, audio.size - STREAM_HOLDBACK_TOKENS * SAMPLES_PER_TOKEN)
            out.chunks[row.id] = audio[row.sent : ready]
            row.sent = ready

    def _finish(self, rows: list[Row], out: StepOutput) -> None:
        """Decode the rows that ended; a streamed row gets the rest of its audio."""
        if not rows:
            return
        for row, audio in zip(rows, self._decode(rows), strict=True):
            out.finished[row.id] = audio[row.sent :] if row.stream else audio
            out.tokens[row.id] = row.tokens[: row.n]

    def _decode(self, rows: list[Row]) -> list[np.ndarray]:
        return self._engine.decode_hiddens([r.hiddens[: r.n] for r in rows])


def _warpers(top_p: float | None, top_k: int | None) -> list[Any]:
    """ChatTTS's ``gen_logits`` warpers for one (top_P, top_K)."""
    from transformers.generation import TopKLogitsWarper, TopPLogitsWarper

    warpers: list[Any] = []
    if top_p is not None:
        warpers.append(TopPLogitsWarper(top_p, min_tokens_to_keep=MIN_TOKENS_TO_KEEP))
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k, min_tokens_to_keep=MIN_TOKENS_TO_KEEP))
    return warpers


def _default_generator_state(torch: Any, device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()
