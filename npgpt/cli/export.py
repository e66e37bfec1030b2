"""`npgpt export`: a training run's checkpoint written as a Hugging Face directory.

It sits with the commands because it joins two ideas the library keeps apart: reading npgpt's
checkpoints (npgpt/training) and writing Hugging Face directories (npgpt/models/hf.py).
"""

from __future__ import annotations

import os
import re

from ..fileio import replace_dir
from ..generation.loading import is_pretrained_dir
from ..training.checkpoint import load_checkpoint
from ..training.lora import lora_layers, merge_lora, save_adapter
from ..training.start import model_from_checkpoint

EXPORT_FILE = re.compile(r"config\.json|generation_config\.json|model(-\d+-of-\d+)?\.safetensors|"
                         r"model\.safetensors\.index\.json|pytorch_model[\w.-]*\.bin(\.index\.json)?|vocab\.json|"
                         r"merges\.txt|tokenizer(_config)?\.json|special_tokens_map\.json|added_tokens\.json")


def export_checkpoint(checkpoint: str, out_dir: str, tokenizer: bool = True, dtype: str | None = None, log=print,
                      merge: bool = False) -> list[str]:
    """`npgpt export`: an npgpt checkpoint (file or training directory) as a GPT-2 directory.

    out_dir is replaced as a whole (fileio.replace_dir): a kill at any moment leaves the old export
    or the new one, and no file of an older export stays beside the new weights. A directory that
    holds files a GPT-2 directory would not (a training run, a user's own) is refused.
    A LoRA run's checkpoint is written as PEFT's adapter directory (training.lora.save_adapter,
    its base named by the run's init_from), or with `merge` as the merged model's GPT-2 directory.
    """
    if is_pretrained_dir(checkpoint):
        raise ValueError(f"{checkpoint}: a GPT-2 / Hugging Face directory already (it holds config.json), not an npgpt "
                         f"checkpoint; export writes a training run's checkpoint in that form. Sample it with `npgpt "
                         f"sample {checkpoint}`, or fine-tune from it with `npgpt train --init-from {checkpoint}`")
    ckpt = load_checkpoint(checkpoint)
    if dtype is None:  # as trained
        dtype = str(next(iter(ckpt.model_state.values())).dtype)
    model = model_from_checkpoint(ckpt, dtype=dtype)
    if lora_layers(model) and not merge:
        base = ckpt.train_config.get("init_from")
        written = save_adapter(model, out_dir, base_model_name_or_path=base)
        log(f"exported the LoRA adapters of {ckpt.path} (step {ckpt.iter_num}) as a PEFT adapter directory -> {out_dir} "
            f"(base model: {base}; --merge writes the merged model instead)")
        return written
    if merge and not lora_layers(model):
        raise ValueError(f"--merge: {ckpt.path} holds no LoRA adapters to merge (export it without --merge)")
    if merge:
        merge_lora(model)
    tok = ckpt.load_tokenizer() if tokenizer and ckpt.tokenizer is not None else None
    if tok is not None and tok.type_name != "bpe":
        raise ValueError(f"{ckpt.path} was trained with a {tok.type_name} tokenizer, which a GPT-2 directory cannot "
                         "hold (it holds a byte-level BPE tokenizer); export the weights alone with --no-tokenizer")
    with replace_dir(out_dir, keep_only=EXPORT_FILE.fullmatch, what="GPT-2 export") as tmp:
        names = [os.path.basename(w) for w in model.save_pretrained(tmp, tokenizer=tok)]
    written = [os.path.join(out_dir, n) for n in names]
    log(f"exported {ckpt.path} (step {ckpt.iter_num}) as a GPT-2 directory: {', '.join(names)} "
        f"-> {out_dir}" + ("" if tok is not None else " (no tokenizer)"))
    return written
