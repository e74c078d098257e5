"""The KV cache of a set of decoding rows that join and leave between steps: padded, compacted.

Layout: one Hugging Face ``DynamicCache`` for all active rows, each layer's keys and values
``[rows, heads, T, head_dim]``, every row LEFT-padded to the longest (``T``), with a
``[rows, T]`` mask of the positions that are real.  A row that joins brings the cache of its
own prefill (one row, no padding); the shorter side is padded on the left and the two are
concatenated along the batch.  Rows that leave are dropped from the batch and the columns
no remaining row uses (padding on the left of every row) are cut off, so the cache never
grows beyond the longest active row.

Why this and not a paged cache: Hugging Face's Llama attends over one dense tensor per
layer, with a padding mask, on CPU and CUDA alike, and ChatTTS's own batched ``generate``
already runs it that way (left padding, per-row positions); a paged layout would need an
attention kernel of our own.  What padding costs -- attention over ``rows x T`` instead of
the sum of the rows' lengths -- is bounded by the spread of lengths among rows that are
active together, and a join or leave copies the cache once (a step already copies it:
``DynamicCache`` grows by concatenation).  Each row's positions are its own (its count of
real tokens), so padding never shifts a row's rotary positions.
"""

from __future__ import annotations

from typing import Any

import torch


class PaddedKV:
    """The rows' cache and padding mask, in row order (the order of the rows' batch index)."""

    def __init__(self) -> None:
        self.cache: Any = None  # a DynamicCache, or None while there are no rows
        self.mask: torch.Tensor | None = None  # [rows, T] bool: real positions
        self.padded = False  # whether some row is shorter than T (a step then needs a mask)

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else int(self.mask.size(0))

    @property
    def length(self) -> int:
        """``T``: the padded length of every row."""
        return 0 if self.mask is None else int(self.mask.size(1))

    def add(self, cache: Any, length: int) -> None:
        """Append one row: ``cache`` is its own prefill's (batch of one, ``length`` positions)."""
        mask = torch.ones(1, length, dtype=torch.bool, device=_device(cache))
        if self.cache is None or self.mask is None:
            self.cache, self.mask, self.padded = cache, mask, False
            return
        self.padded = self.padded or length != self.length
        width = max(self.length, length)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(mask, width)])

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices`` (in that order); cut the columns left unused."""
        if not indices:
            self.cache, self.mask, self.padded = None, None, False
            return
        assert self.mask is not None and self.cache is not None
        index = torch.tensor(indices, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(0).nonzero()
        first = int(used[0]) if used.numel() else 0
        self.mask = mask[:, first:]
        self.padded = not bool(self.mask.all())
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]

    def step_mask(self) -> torch.Tensor:
        """The attention mask of the next step: every row's real positions plus the new one."""
        assert self.mask is not None
        return torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], 1)

    def stepped(self) -> None:
        """The model appended one position to every row (the step succeeded)."""
        self.mask = self.step_mask()

    def rollback(self) -> None:
        """A step failed part-way (some layers appended its position, others not): every layer
        back to ``T``, so the rows can be retried."""
        if self.cache is None:
            return
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.size(-2) > self.length:
                layer.keys = layer.keys[:, :, : self.length]
                layer.values = layer.values[:, :, : self.length]

    def split(self) -> list[tuple[Any, int]]:
        """Each row's own cache (no padding) and length, in row order (retrying rows alone)."""
        if self.cache is None or self.mask is None:
            return []
        caches: list[tuple[Any, int]] = []
        for i in range(self.rows):
            real = int(self.mask[i].sum())
            single = _empty_like(self.cache)
            for mine, theirs in zip(single.layers, self.cache.layers, strict=True):
                mine.keys = theirs.keys[i : i + 1, :, self.length - real :].clone()
                mine.values = theirs.values[i : i + 1, :, self.length - real :].clone()
            caches.append((single, real))
        return caches


def _device(cache: Any) -> torch.device:
    return cache.layers[0].keys.device


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.size(-2)
    if missing == 0:
        return tensor
    pad = tensor.new_zeros(*tensor.shape[:-2], missing, tensor.size(-1))
    return torch.cat([pad, tensor], -2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.size(1)
    if missing == 0:
        return mask
    return torch.cat([mask.new_zeros(mask.size(0), missing), mask], 1)


def _empty_like(cache: Any) -> Any:
    """A cache of the same class and layer kinds, its tensors to be set by the caller."""
    import copy

    single = copy.copy(cache)
    single.layers = [copy.copy(layer) for layer in cache.layers]
    return single
