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

**A step's cost does not grow with Python work per row.**  A step of a small model is mostly
the overhead of launching tensor ops, so the rows' state lives in slot buffers
(:class:`_Slots`: tokens, hidden states, temperature) that a step reads and writes with one
indexing op for all rows; the repetition penalty counts each row's last 16 tokens with one
scatter-add (the same counts as ChatTTS's one-hot sum); and SDPA gets the step's attention
mask ready-made -- none while no row is padded, else the 4-D padding mask -- which is what
Hugging Face would build from the 2-D one, at a tenth of a small step's time.  None of this
changes a value: the equivalence tests compare tokens and audio exactly.

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
from typing import TYPE_CHECKING, Any, NamedTuple

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
    top_p: float | None
    top_k: int | None
    generator: Any  # a torch.Generator for a seeded row, else None (torch's default one)
    greedy: bool
    slot: int  # its place in the loop's token and hidden-state buffers (:class:`_Slots`)
    length: int  # its real positions in the KV cache
    pending: Any = None  # joining: [num_vq, vocab] logits of its first token, from its prefill
    pending_hidden: Any = None  # joining: [hidden] the prefill's last hidden state
    n: int = 0  # tokens generated
    sent: int = 0  # samples a streamed row has sent
    cache: Any = None  # its prefill's KV cache until its first token is drawn (then the batch's)
    started: float = field(default_factory=time.perf_counter)


class _Slots:
    """Every active row's tokens, hidden states and temperature, one slot per row in buffers of
    ``[slots, longest budget, ...]``: a step reads its rows' last tokens and penalty windows and
    writes their new tokens and hidden states with one indexing op each, however many rows
    there are (tensors of their own per row would cost a few ops per row per step, which is
    what a step of a small model spends its time on).  A slot is taken on admission and given
    back when its row leaves; there are ``max_batch_size`` slots, more on demand."""

    def __init__(self, torch: Any, slots: int, width: int, num_vq: int, hidden: int, gpt: Any) -> None:
        self._torch = torch
        self.tokens = torch.zeros(slots, width, num_vq, dtype=torch.long, device=gpt.device_gpt)
        self.hiddens = torch.zeros(slots, width, hidden, dtype=torch.float, device=gpt.device)
        self.temperature = torch.ones(slots, num_vq, dtype=torch.float, device=gpt.device)
        self._free = list(range(slots))

    def take(self, budget: int) -> int:
        torch = self._torch
        if budget > self.tokens.size(1):  # a budget above the one sized for: widen
            self.tokens = _grow(torch, self.tokens, 1, budget)
            self.hiddens = _grow(torch, self.hiddens, 1, budget)
        if not self._free:  # more rows than max_batch_size (a caller of its own): more slots
            have = self.tokens.size(0)
            self.tokens = _grow(torch, self.tokens, 0, 2 * have)
            self.hiddens = _grow(torch, self.hiddens, 0, 2 * have)
            self.temperature = _grow(torch, self.temperature, 0, 2 * have)
            self._free = list(range(have, 2 * have))
        return self._free.pop()

    def give_back(self, slot: int) -> None:
        self._free.append(slot)

    def index(self, values: list[int], device: Any) -> Any:
        return self._torch.tensor(values, dtype=self._torch.long, device=device)


class _Draws(NamedTuple):
    """One step's draws: for each of ``rows``, its token ids, whether they end it, and the
    hidden state that produced them."""

    rows: list[Row]
    ids: Any  # [rows, num_vq] long
    ends: list[bool]
    hidden: Any  # [rows, hidden] float32


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
        # Hugging Face builds a step's attention mask from a 2-D padding mask in Python (about
        # a tenth of a small model's step): with SDPA attention the loop hands it the 4-D mask
        # itself, or none when no row is padded -- what Hugging Face would pass SDPA anyway.
        self._sdpa = getattr(gpt.gpt.config, "_attn_implementation", None) == "sdpa"
        settings = engine.settings
        self._slots = _Slots(
            torch,
            settings.max_batch_size,
            settings.max_new_tokens,
            self._num_vq,
            int(gpt.gpt.config.hidden_size),
            gpt,
        )
        self._kv = PaddedKV()
        self._rows: list[Row] = []  # in the KV cache's row order
        self._joining: list[Row] = []  # prefilled, first token not drawn yet
        self._empty: list[int] = []  # admitted with nothing to speak: finish at the next step
        self.greedy = False  # tests: argmax instead of sampling

    @property
    def rows(self) -> int:
        return len(self._rows) + len(self._joining) + len(self._empty)

    def warmup(self) -> None:
        """The loop's own shapes with the fewest tokens, before the first request: a prefill,
        a second (streamed) row joining a step later into the padded cache, batched steps, both
        leaving and being decoded; on CUDA also every slot filled at once (the allocator's
        blocks for a full batch).  Each row runs :data:`~.chattts.WARMUP_TOKENS` tokens."""
        from .chattts import WARMUP_TEXT, WARMUP_TOKENS

        engine = self._engine
        voice = engine.resolve_voice(None, WARMUP_TEXT)
        with engine._startup.timed("warmup_decode_loop"):
            self._admit(-1, SynthesisItem(WARMUP_TEXT, voice), False, _always, WARMUP_TOKENS)
            self.step()
            self._admit(-2, SynthesisItem("热身。", voice), True, _always, WARMUP_TOKENS)
            while self.rows:
                self.step()
        device = self._gpt.device
        if device.type == "cuda" and self._slots.tokens.size(0) > 1:
            with engine._startup.timed("warmup_full_batch"):
                for row in range(self._slots.tokens.size(0)):
                    self._admit(-3 - row, SynthesisItem(WARMUP_TEXT, voice), False, _always, WARMUP_TOKENS)
                while self.rows:
                    self.step()

    # -- admission ---------------------------------------------------------------------------

    def admit(self, row: int, item: SynthesisItem, *, stream: bool, eager: Callable[[], bool]) -> None:
        self._admit(row, item, stream, eager, None)

    def _admit(
        self, row: int, item: SynthesisItem, stream: bool, eager: Callable[[], bool], budget: int | None
    ) -> None:
        """:meth:`admit`, with the row's token budget given (warmup) or from its text (None)."""
        torch = self._torch
        engine, chat, gpt = self._engine, self._chat, self._gpt
        text = engine.prepare_texts([item])[0]
        if not text:  # nothing ChatTTS can say: no audio (see ChatTTSEngine._speakable)
            self._empty.append(row)
            return
        settings = engine.settings
        options = item.options
        budget = engine.row_budget(text, item.speed) if budget is None else budget
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
        slot = self._slots.take(budget)
        self._slots.temperature[slot] = temperature
        new = Row(
            id=row,
            item=item,
            stream=stream,
            eager=eager,
            budget=budget,
            min_tokens=min(settings.min_new_tokens, budget),
            top_p=settings.top_p if options.top_p is None else options.top_p,
            top_k=settings.top_k if options.top_k is None else options.top_k,
            generator=generator,
            greedy=self.greedy,
            slot=slot,
            length=length,
            pending=logits,
            pending_hidden=hidden[0],
        )
        new.cache = cache  # joins the batch's cache after its first draw
        self._joining.append(new)

    def drop(self, row: int) -> None:
        """``row`` leaves now (its request was cancelled or failed elsewhere)."""
        self._empty = [r for r in self._empty if r != row]
        for r in [*self._joining, *self._rows]:
            if r.id == row:
                self._slots.give_back(r.slot)
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
            ended = self._settle_draws(draws, out) if draws is not None else []
            self._stream(out)
            self._finish(ended, out)
        return out

    def _advance(self, rows: list[Row], kv: PaddedKV, joining: list[Row]) -> _Draws | None:
        """One forward for ``rows`` (their cache ``kv``), then one draw for them and ``joining``.
        All or nothing: if it raises, ``kv`` and the rows are as they were before."""
        torch = self._torch
        q = self._num_vq
        every = [*rows, *joining]
        if not every:
            return None
        logits, hidden = [], []
        if rows:
            gpt = self._gpt
            tokens = self._slots.tokens
            device = tokens.device
            last = tokens[
                self._slots.index([r.slot for r in rows], device),
                self._slots.index([r.n - 1 for r in rows], device),
            ].unsqueeze(1)  # [rows, 1, num_vq]
            code_emb = [gpt.emb_code[j](last[:, :, j]).to(gpt.device) for j in range(q)]
            emb = torch.stack(code_emb, 3).sum(3)
            positions = torch.tensor([[r.length] for r in rows], device=device)
            cache_position = torch.arange(kv.length, kv.length + 1, device=device)
            try:
                step_hidden, step_logits, _ = self._forward(
                    emb, self._step_mask(kv), positions, cache_position, kv.cache
                )
            except BaseException:
                kv.rollback()  # some layers may have appended the step's position
                raise
            logits.append(step_logits)
            hidden.append(step_hidden)
        if joining:
            logits += [r.pending for r in joining]
            hidden.append(torch.stack([r.pending_hidden for r in joining]))
        try:
            ids, ends = self._draw(every, torch.cat(logits) if len(logits) > 1 else logits[0])
        except BaseException:
            kv.rollback()
            raise
        if rows:
            kv.stepped()
        for r in rows:
            r.length += 1
        return _Draws(every, ids, ends, torch.cat(hidden) if len(hidden) > 1 else hidden[0])

    def _step_mask(self, kv: PaddedKV) -> Any:
        """The step's attention mask: none if no row is padded, else the rows' real positions
        (4-D for SDPA, which is what Hugging Face would make of the 2-D one)."""
        if not self._sdpa:
            return kv.step_mask()
        if not kv.padded:
            return None
        return kv.step_mask()[:, None, None, :]

    def _advance_alone(self, error: Exception, out: StepOutput) -> _Draws | None:
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
        draws: list[_Draws] = []
        singles = list(zip(self._rows, self._kv.split(), strict=True))
        survivors: list[tuple[Row, Any, int]] = []
        for row, (cache, length) in singles:
            kv = PaddedKV()
            kv.add(cache, length)
            try:
                draws.append(self._advance([row], kv, []))
            except Exception as exc:
                out.failed[row.id] = exc
                self._slots.give_back(row.slot)
                continue
            survivors.append((row, kv.cache, int(kv.length)))
        joining = []
        for row in self._joining:
            try:
                draws.append(self._advance([], PaddedKV(), [row]))
                joining.append(row)
            except Exception as exc:
                out.failed[row.id] = exc
                self._slots.give_back(row.slot)
        self._kv = PaddedKV()
        self._rows = []
        for row, cache, length in survivors:
            self._kv.add(cache, length)
            self._rows.append(row)
        self._joining = joining
        if not draws:
            return None
        torch = self._torch
        return _Draws(
            [r for d in draws for r in d.rows],
            torch.cat([d.ids for d in draws]),
            [e for d in draws for e in d.ends],
            torch.cat([d.hidden for d in draws]),
        )

    def _settle_draws(self, draws: _Draws, out: StepOutput) -> list[Row]:
        """Record each row's draw (one write for all rows); return the rows that ended (EOS
        or budget)."""
        ended = [row for row, end in zip(draws.rows, draws.ends, strict=True) if end]
        live = [i for i, end in enumerate(draws.ends) if not end]
        if live:
            rows = [draws.rows[i] for i in live]
            ids, hidden = draws.ids, draws.hidden
            if len(live) < len(draws.rows):
                ids = ids[self._slots.index(live, ids.device)]
                hidden = hidden[self._slots.index(live, hidden.device)]
            tokens, hiddens = self._slots.tokens, self._slots.hiddens
            slots = self._slots.index([r.slot for r in rows], tokens.device)
            counts = self._slots.index([r.n for r in rows], tokens.device)
            tokens[slots, counts] = ids
            hiddens[slots.to(hiddens.device), counts.to(hiddens.device)] = hidden  # (no copy on one device)
            for row in rows:
                row.n += 1
                if row.n >= row.budget:
                    out.truncated.append(row.id)
                    ended.append(row)
        gone = {id(r) for r in ended}
        for row in self._joining:  # their first token is in: their cache joins the batch's
            if id(row) not in gone:
                self._kv.add(row.cache, row.length)
                self._rows.append(row)
            row.cache = row.pending = row.pending_hidden = None
        self._joining = []
        if gone:
            keep = [i for i, r in enumerate(self._rows) if id(r) not in gone]
            self._kv.keep(keep)
            self._rows = [self._rows[i] for i in keep]
        return ended

    # -- sampling (ChatTTS's logits pipeline, per row) ----------------------------------------

    def _draw(self, rows: list[Row], logits: Any) -> tuple[Any, list[bool]]:
        """Each row's next token ids ([rows, num_vq] long) and whether they end it, drawn as
        ``GPT.generate`` draws them (one device sync per step, for the end test)."""
        torch = self._torch
        q = self._num_vq
        slots = self._slots.index([r.slot for r in rows], self._slots.tokens.device)
        logits = logits.float()
        logits /= self._slots.temperature[slots.to(logits.device)].view(-1, 1)
        logits = self._penalize(rows, slots, logits)
        logits = self._warp(rows, logits)
        below = [i for i, r in enumerate(rows) if r.n < r.min_tokens]
        if len(below) == len(rows):
            logits[:, self._eos] = -torch.inf
        for i in below if len(below) < len(rows) else ():
            logits[i * q : (i + 1) * q, self._eos] = -torch.inf
        scores = torch.nn.functional.softmax(logits, dim=-1)
        ids = self._sample(rows, scores).view(len(rows), q)
        ends = ids.eq(self._eos).any(1).tolist()
        for i, r in enumerate(rows):
            draw = 1
            while r.n == 0 and ends[i] and draw < MAX_FIRST_DRAWS:  # ChatTTS regenerates an empty start
                ids[i] = self._sample([r], scores[i * q : (i + 1) * q]).view(-1)
                ends[i], draw = bool(ids[i].eq(self._eos).any()), draw + 1
        return ids.to(self._slots.tokens.device), ends

    def _penalize(self, rows: list[Row], slots: Any, logits: Any) -> Any:
        """ChatTTS's repetition penalty over each row's last 16 tokens (each codebook apart):
        the same counts as its one-hot sum, gathered and counted for all rows at once.
        ``slots``: the rows' slots, an index on the token buffer's device."""
        torch = self._torch
        tokens = self._slots.tokens
        back = torch.arange(-PENALTY_WINDOW, 0, device=tokens.device)
        at = self._slots.index([r.n for r in rows], tokens.device).unsqueeze(1) + back  # [rows, 16]
        window = tokens[slots.unsqueeze(1), at.clamp(min=0)]
        window = window.masked_fill_(at.lt(0).unsqueeze(2), self._vocab)  # before the first: none
        window = window.permute(0, 2, 1).reshape(len(rows) * self._num_vq, PENALTY_WINDOW)
        window = window.to(logits.device)
        freq = torch.zeros(window.size(0), self._vocab + 1, dtype=torch.long, device=logits.device)
        freq = freq.scatter_add_(1, window, torch.ones_like(window)).narrow(1, 0, self._vocab)
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
        if mask is not None and mask.dim() == 2:
            mask = mask.to(gpt.device_gpt, dtype=dtype)  # as GPT.generate passes it
        outputs = gpt.gpt(
            attention_mask=mask,
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
            out.tokens[row.id] = self._slots.tokens[row.slot, : row.n].clone()
            self._slots.give_back(row.slot)

    def _decode(self, rows: list[Row]) -> list[np.ndarray]:
        return self._engine.decode_hiddens([self._slots.hiddens[r.slot, : r.n] for r in rows])


def _always() -> bool:
    return True


def _warpers(top_p: float | None, top_k: int | None) -> list[Any]:
    """ChatTTS's ``gen_logits`` warpers for one (top_P, top_K)."""
    from transformers.generation import TopKLogitsWarper, TopPLogitsWarper

    warpers: list[Any] = []
    if top_p is not None:
        warpers.append(TopPLogitsWarper(top_p, min_tokens_to_keep=MIN_TOKENS_TO_KEEP))
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k, min_tokens_to_keep=MIN_TOKENS_TO_KEEP))
    return warpers


def _grow(torch: Any, buffer: Any, dim: int, size: int) -> Any:
    """``buffer`` with zeros appended along ``dim`` up to ``size``."""
    shape = list(buffer.shape)
    shape[dim] = size - shape[dim]
    return torch.cat([buffer, buffer.new_zeros(shape)], dim)


def _default_generator_state(torch: Any, device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()
