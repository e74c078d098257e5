"""Build a random-weights ChatTTS checkpoint of the real architecture, for tests and benchmarks.

    python tests/chattts_checkpoint.py OUT_DIR [--full-size]

The checkpoint is an ``asset/`` tree exactly like the official one -- ``Vocos``, ``DVAE``,
``Decoder`` and ``Embed`` safetensors, ``gpt/config.json`` + ``gpt/model.safetensors`` (a
Llama), and a ``BertTokenizerFast`` under ``tokenizer/`` -- built by instantiating
ChatTTS's OWN module classes with a (small) geometry and saving their random weights, so
the shapes are consistent by construction and the real loader and inference code run on
it.  Beside it, ``chattts-config.json`` holds the geometry as ``TTS_CHATTTS_CONFIG``
overrides.  The official geometry is ``--full-size`` (for benchmarks); the default is tiny
(seconds to build and to run in CI).

Consistency rules the builder follows (ChatTTS hard-codes some of them):
- GPT hidden size = 2 x the Decoder's idim (the decoder views each hidden vector as two
  frames), and Decoder odim = idim (its out_conv maps ``dim`` to 100 mel bins);
- 100 mel bins everywhere; 626 audio tokens; 4 VQ codebooks;
- text vocabulary = 21 128 BERT-Chinese-sized entries + 50 ChatTTS tokens = 21 178
  (a stand-in vocabulary of the same size: CJK characters, ASCII, word pieces, [unusedN];
  ChatTTS only looks its own tokens up by name);
- a speaker statistics string (``spk_stat``) of 2 x hidden float16 values.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pybase16384 as b14
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "service"))

from tts_service.engines.chattts_model import MODEL_FILES, fresh_config  # noqa: E402
from tts_service.engines.weight_hash_cache import sha256_file  # noqa: E402

BASE_VOCAB_SIZE = 21_128
CHATTTS_TOKENS = (
    ["[Sbreak]", "[Pbreak]", "[Ebreak]", "[Stts]", "[Ptts]", "[Etts]", "[spk_emb]", "[empty_spk]"]
    + ["[uv_break]", "[v_break]", "[lbreak]", "[laugh]", "[music]", "[Sasr]", "[Pasr]", "[Easr]"]
    + ["[Sspk]", "[Pspk]", "[Espk]"]
    + [f"[laugh_{i}]" for i in range(3)]
    + [f"[break_{i}]" for i in range(8)]
    + [f"[oral_{i}]" for i in range(10)]
    + [f"[speed_{i}]" for i in range(10)]
)
assert len(CHATTTS_TOKENS) == 50

TINY: dict[str, Any] = {
    "gpt": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": 4096,
    },
    "decoder": {"idim": 32, "odim": 32, "hidden": 32, "n_layer": 1, "bn_dim": 16},
    "dvae": {
        "encoder": {"idim": 32, "odim": 64, "hidden": 32, "n_layer": 1, "bn_dim": 16},
        "decoder": {"idim": 32, "odim": 32, "hidden": 32, "n_layer": 1, "bn_dim": 16},
        "vq": {"dim": 64},
    },
    "embed": {"hidden_size": 64},
    "vocos": {
        "backbone": {"init_args": {"dim": 64, "intermediate_dim": 128, "num_layers": 1}},
        "head": {"init_args": {"dim": 64}},
    },
}


def base_vocabulary() -> list[str]:
    """BERT-Chinese-sized stand-in vocabulary (special tokens first, as BERT's)."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [chr(c) for c in range(0x21, 0x7F)]
    words += [f"##{chr(c)}" for c in range(0x21, 0x7F) if chr(c).isalnum()]
    words += [chr(c) for c in range(0x4E00, 0x9FA6)]  # CJK unified ideographs
    words += ["，", "。", "！", "？", "、", "；", "：", "“", "”", "（", "）", "—", "…"]
    unused = BASE_VOCAB_SIZE - len(words)
    assert unused >= 0
    return words[:5] + [f"[unused{i}]" for i in range(1, unused + 1)] + words[5:]


def write_tokenizer(directory: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = {word: i for i, word in enumerate(base_vocabulary())}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    tokenizer.add_special_tokens({"additional_special_tokens": CHATTTS_TOKENS})
    assert len(tokenizer) == BASE_VOCAB_SIZE + len(CHATTTS_TOKENS)
    tokenizer.save_pretrained(str(directory))
    # transformers 5 no longer writes this file; the official checkpoint has it (and ChatTTS checks it).
    special = {
        "additional_special_tokens": CHATTTS_TOKENS,
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=1))


def spk_stat(hidden: int, generator: torch.Generator) -> str:
    std = torch.rand(hidden, generator=generator) * 0.5 + 0.5
    mean = torch.randn(hidden, generator=generator) * 0.1
    return b14.encode_to_string(torch.cat([std, mean]).to(torch.float16).numpy().tobytes())


def geometry(full_size: bool) -> dict[str, Any]:
    return {} if full_size else json.loads(json.dumps(TINY))


def build_checkpoint(out: Path, full_size: bool = False, seed: int = 0) -> dict[str, Any]:
    """Write ``out/asset/...`` and ``out/chattts-config.json``; return facts about it."""
    from ChatTTS.config import Config
    from ChatTTS.model import DVAE, Embed
    from transformers import LlamaConfig, LlamaModel
    from vocos import Vocos
    from vocos.pretrained import instantiate_class

    torch.manual_seed(seed)  # a build-time tool, alone in its process or fixture
    generator = torch.Generator().manual_seed(seed)
    overrides = geometry(full_size)
    if not full_size:
        overrides["spk_stat"] = spk_stat(overrides["gpt"]["hidden_size"], generator)
    config = fresh_config(Config(), overrides)
    asset = out / "asset"
    (asset / "gpt").mkdir(parents=True, exist_ok=True)

    vocos = Vocos(
        feature_extractor=instantiate_class(args=(), init=asdict(config.vocos.feature_extractor)),
        backbone=instantiate_class(args=(), init=asdict(config.vocos.backbone)),
        head=instantiate_class(args=(), init=asdict(config.vocos.head)),
    )
    save_file(_contiguous(vocos.state_dict()), str(asset / "Vocos.safetensors"))
    dvae = DVAE(
        decoder_config=asdict(config.dvae.decoder),
        encoder_config=asdict(config.dvae.encoder),
        vq_config=asdict(config.dvae.vq),
        dim=config.dvae.decoder.idim,
    )
    save_file(_contiguous(dvae.state_dict()), str(asset / "DVAE.safetensors"))
    decoder = DVAE(decoder_config=asdict(config.decoder), dim=config.decoder.idim)
    save_file(_contiguous(decoder.state_dict()), str(asset / "Decoder.safetensors"))
    embed = Embed(
        config.embed.hidden_size,
        config.embed.num_audio_tokens,
        config.embed.num_text_tokens,
        config.embed.num_vq,
    )
    save_file(_contiguous(embed.state_dict()), str(asset / "Embed.safetensors"))

    g = config.gpt
    llama = LlamaModel(
        LlamaConfig(
            hidden_size=g.hidden_size,
            intermediate_size=g.intermediate_size,
            num_attention_heads=g.num_attention_heads,
            num_hidden_layers=g.num_hidden_layers,
            max_position_embeddings=g.max_position_embeddings,
            vocab_size=8,  # ChatTTS deletes the Llama's own embeddings after loading
        )
    )
    llama.save_pretrained(str(asset / "gpt"), safe_serialization=True)
    write_tokenizer(asset / "tokenizer")

    (out / "chattts-config.json").write_text(json.dumps(overrides, ensure_ascii=False, indent=1))
    hashes = {key: sha256_file(asset / name) for name, key in MODEL_FILES}
    # Its own sha256 map, for TTS_MODEL_SHA256_FILE (verification on for random weights).
    (out / "sha256-map.json").write_text(json.dumps(hashes, indent=1))
    return {
        "asset": asset,
        "config": out / "chattts-config.json",
        "sha256": hashes,
        "sha256_file": out / "sha256-map.json",
    }


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--full-size", action="store_true", help="the official geometry (~1 GB)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = build_checkpoint(args.out, args.full_size, args.seed)
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in info.items()}, indent=1))
