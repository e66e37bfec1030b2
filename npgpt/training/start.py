"""Where a training run's model comes from: a new one (scratch), a checkpoint (resume, fine-tune),
or a Hugging Face directory (fine-tune). Each start checks the data's tokenizer against the model's.

On resume and fine-tune the model is the source's, described by the source's own config; of this
run's `cfg.model` only `dropout` is used (a shape given differently is logged, and on the command
line refused by resume_config).
"""

from __future__ import annotations

import dataclasses
import os

from ..models.config import GPTConfig
from ..models.gpt import GPT
from .checkpoint import BEST, LATEST, Checkpoint, load_checkpoint
from .lora import LoraConfig, add_lora, lora_layers, merge_lora


def model_from_checkpoint(ckpt: Checkpoint, dtype="float32", device=None, seed: int = 0, **overrides) -> GPT:
    """A GPT with the checkpoint's config (fields in `overrides` replaced, e.g. dropout) and weights;
    `seed` only seeds its dropout generator, since the weights come from the checkpoint."""
    config = GPTConfig.from_dict({**ckpt.model_config, **overrides})
    model = GPT(config, seed=seed, dtype=dtype, device=device, init=False)  # every weight comes from the file
    lora = (ckpt.train_config or {}).get("lora")
    if lora:  # a LoRA run's checkpoint holds the base weights and the adapters, under their own names
        add_lora(model, LoraConfig.from_dict(lora), seed=seed)
    model.load_state_dict(ckpt.model_state)
    return model


def _data_tokenizers(data) -> list[dict]:
    """The tokenizers a model may have been trained with to train on `data`: its own, and (SFT data that
    added special tokens, npgpt.data.sft) the one it was prepared from, which lacks them."""
    own = data.tokenizer.to_dict()
    added = getattr(data, "added_tokens", None)
    if not added:
        return [own]
    from ..data.sft import base_tokenizer_dict  # noqa: PLC0415

    return [own, base_tokenizer_dict(data.tokenizer, added)]


def _grow_for(model: GPT, data, log) -> GPT:
    """model with rows for the special tokens the SFT data added (models/resize.py says how they start)."""
    if model.config.vocab_size >= data.vocab_size:
        return model
    from ..models.resize import grow_vocab  # noqa: PLC0415

    added = ", ".join(getattr(data, "added_tokens", {}) or ()) or f"{data.vocab_size - model.config.vocab_size} ids"
    log(f"the data's tokenizer adds {added}: the embedding and head grow from {model.config.vocab_size} to "
        f"{data.vocab_size} rows, each new one the mean of the old rows")
    return grow_vocab(model, data.vocab_size)


def _check_tokenizer(data, ckpt: Checkpoint, what: str) -> None:
    if ckpt.tokenizer is not None and ckpt.tokenizer not in _data_tokenizers(data):
        old, new = ckpt.load_tokenizer(), data.tokenizer
        raise ValueError(
            f"{what}: the checkpoint {ckpt.path} was trained with a {old.type_name} tokenizer of vocab {old.vocab_size}, "
            f"but {data.data_dir} was prepared with a different {new.type_name} tokenizer of vocab {new.vocab_size}; "
            f"prepare the new text with the checkpoint's tokenizer: `npgpt prepare TEXT --out DIR --tokenizer-file "
            f"{os.path.join(os.path.dirname(ckpt.path), 'tokenizer.json')}`"
        )


def finetune_start(path: str, data_tokenizer, dtype="float32", device=None, seed: int = 0, dropout: float = 0.0,
                   log=print, accepted: list[dict] | None = None) -> GPT:
    """`npgpt train --init-from DIR` with a Hugging Face directory: its model in train mode, after
    checking that the data was tokenized with the directory's own tokenizer."""
    model = GPT.from_pretrained(path, dtype=dtype, device=device, dropout=dropout, seed=seed)
    tok, how = model.tokenizer, f"`npgpt prepare TEXT --out DIR --tokenizer-file {path}`"
    if tok is None:
        raise ValueError(f"fine-tune: {path} has no tokenizer files, so npgpt cannot check that the data was "
                         "tokenized with this model's tokenizer; put the model's tokenizer files there and prepare "
                         f"the text with {how}")
    if tok.to_dict() not in (accepted or [data_tokenizer.to_dict()]):
        raise ValueError(f"fine-tune: the Hugging Face directory {path} has a {tok.type_name} tokenizer of vocab "
                         f"{tok.vocab_size}, but the data was prepared with a different {data_tokenizer.type_name} "
                         f"tokenizer of vocab {data_tokenizer.vocab_size}; prepare the text with the model's "
                         f"tokenizer: {how}")
    c = model.config
    log(f"fine-tuning from the Hugging Face directory {path} ({c.n_layer} layers, {c.n_head} heads, n_embd "
        f"{c.n_embd}, block_size {c.block_size}, vocab {c.vocab_size}; dropout {dropout} everywhere, from --dropout, "
        "not config.json's resid/embd/attn_pdrop)")
    return model.train()


def _scratch_config(model: GPTConfig, vocab_size: int) -> GPTConfig:
    if model.vocab_size is None:
        return model.with_vocab(vocab_size)
    if model.vocab_size < vocab_size:
        raise ValueError(f"vocab_size={model.vocab_size} is smaller than the data's vocabulary ({vocab_size} ids)")
    return model


def start_model(cfg, data, log):
    """(model, checkpoint or None) for cfg.init_from, in train mode on cfg's device and dtype, with
    cfg.lora's adapters on it (a fine-tune from a LoRA checkpoint first merges that run's adapters)."""
    model, ckpt = _start_model(cfg, data, log)
    resume = cfg.init_from == "resume"
    if resume and (cfg.lora is not None) != bool(lora_layers(model)):
        raise ValueError(f"resume: the checkpoint {ckpt.path} {'holds' if lora_layers(model) else 'holds no'} LoRA "
                         f"adapters, the run {'has none' if cfg.lora is None else 'asks for them'}")
    if not resume:
        if lora_layers(model):
            merge_lora(model)
            log(f"merged the LoRA adapters of {ckpt.path} into its weights")
        model = _grow_for(model, data, log)  # rows for tokens the SFT data added, before any new adapters
        if cfg.lora is not None:
            layers = add_lora(model, cfg.lora, seed=cfg.seed)
            c = model.lora_config
            log(f"LoRA r={c.r} alpha={c.alpha:g} (scale {c.scale:g}) dropout={c.dropout:g} on {len(layers)} layers "
                f"({', '.join(c.target_modules) if isinstance(c.target_modules, tuple) else c.target_modules}); "
                "the base weights are frozen")
    return model, ckpt


def _start_model(cfg, data, log):
    if cfg.init_from == "scratch":
        config = _scratch_config(cfg.model, data.vocab_size)
        return GPT(config, seed=cfg.seed, dtype=cfg.dtype, device=cfg.device), None
    resume = cfg.init_from == "resume"
    if not resume and os.path.isfile(os.path.join(cfg.init_from, "config.json")):  # a Hugging Face directory
        model = finetune_start(cfg.init_from, data.tokenizer, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed,
                               dropout=cfg.model.dropout, log=log, accepted=_data_tokenizers(data))
        return model, None
    if resume and not any(os.path.isfile(os.path.join(cfg.out_dir, n)) for n in (LATEST, BEST)):
        raise ValueError(f"init_from='resume': no checkpoint in {cfg.out_dir} to resume from (expected {LATEST}); "
                         "train with --init-from scratch first, or point --out-dir at a training directory")
    ckpt = load_checkpoint(cfg.out_dir if resume else cfg.init_from, prefer=LATEST if resume else BEST)
    _check_tokenizer(data, ckpt, "resume" if resume else "fine-tune")
    model = model_from_checkpoint(ckpt, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed, dropout=cfg.model.dropout)
    mine = dataclasses.replace(cfg.model, vocab_size=model.config.vocab_size, dropout=model.config.dropout)
    if mine != model.config:
        changed = [f"{f.name}={getattr(model.config, f.name)!r}" for f in dataclasses.fields(GPTConfig)
                   if getattr(mine, f.name) != getattr(model.config, f.name)]
        log(f"model shape from {ckpt.path}: " + ", ".join(changed))
    log(f"{'resuming' if resume else 'fine-tuning'} from {ckpt.path} (step {ckpt.iter_num})")
    return model, ckpt
