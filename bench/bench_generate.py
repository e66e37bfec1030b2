"""Greedy generation speed: npgpt with and without its KV cache, and transformers' GPT-2 on the same weights
(--arch llama: npgpt's Llama block, 3 key/value heads for 6 heads, against transformers' LlamaForCausalLM, SDPA).

A 6-layer, 6-head, 384-wide GPT-2 (vocab 65, block 256, float32) generates 256 new tokens greedily
from a one-token prompt (the last step's context is exactly block_size, so transformers never runs
past its position table). The same random weights sit in npgpt's GPT and in
transformers.GPT2LMHeadModel; both run on the same number of threads (NumPy's BLAS through its
environment variables, set before NumPy loads; torch.set_num_threads). Runs alternate between the
frameworks so a busy machine slows all alike; the median of --repeats runs is reported.

    python bench/bench_generate.py                 # ~1-2 min on 2 cores
    python bench/bench_generate.py --threads 1 --repeats 5
    python bench/bench_generate.py --arch llama
"""

from __future__ import annotations

import argparse
import os
import sys


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for both (default: all cores)")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (default: 3)")
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    return ap.parse_args()


ARGS = parse()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy loads its BLAS
    os.environ[var] = str(ARGS.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from npgpt import GPT, GPTConfig  # noqa: E402

SHAPE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65)


def llama_models():
    """npgpt's Llama-layout GPT (seed 0) and transformers' LlamaForCausalLM (SDPA) with its weights, float32."""
    from npgpt.models import hf_llama as mapping

    ours = GPT(GPTConfig.for_arch("llama", **SHAPE, n_kv_head=SHAPE["n_head"] // 2, tie_embeddings=True),
               seed=0, dtype="float32").eval()
    d = mapping.config_to_hf(ours.config, "float32")
    d = {k: v for k, v in d.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**d, attn_implementation="sdpa")).float().eval()
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
             mapping.state_to_hf({k: np.array(v) for k, v in ours.state_dict().items()}, ours.config).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return ours, hf


def models():
    """npgpt's GPT (GPT-2 init, seed 0) and a GPT2LMHeadModel holding a copy of its weights, float32."""
    ours = GPT(GPTConfig(**SHAPE, dropout=0.0), seed=0, dtype="float32").eval()
    cfg = transformers.GPT2Config(n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], n_embd=SHAPE["n_embd"],
                                  n_positions=SHAPE["block_size"], vocab_size=SHAPE["vocab_size"],
                                  activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).float().eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing), (missing, unexpected)
    return ours, hf


def main():
    torch.set_num_threads(ARGS.threads)
    ours, hf = llama_models() if ARGS.arch == "llama" else models()
    n = ARGS.new_tokens
    prompt = np.array([[0]])
    x = torch.as_tensor(prompt)

    def hf_run():
        with torch.no_grad():
            return hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                               min_new_tokens=n, use_cache=True).numpy()

    rows = {  # name -> a function returning the generated ids
        "npgpt, KV cache": lambda: ours.generate(prompt, max_new_tokens=n),
        "npgpt, no cache": lambda: ours.generate(prompt, max_new_tokens=n, use_cache=False),
        "transformers, KV cache": hf_run,
    }
    times = {name: [] for name in rows}
    outputs = {name: fn() for name, fn in rows.items()}  # warmup, and the tokens to compare
    for _ in range(ARGS.repeats):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    print(f"greedy generation, {n} new tokens from a 1-token prompt: {SHAPE['n_layer']} layers, {SHAPE['n_head']} heads, "
          f"{SHAPE['n_embd']} wide, block {SHAPE['block_size']}, vocab {SHAPE['vocab_size']}, float32, "
          + ("GPT-2 vs GPT2LMHeadModel" if ARGS.arch == "gpt2" else
             f"Llama ({ours.config.n_kv_head} kv heads) vs LlamaForCausalLM (SDPA)"))
    print(f"threads: {ARGS.threads} (OPENBLAS/OMP/MKL_NUM_THREADS, torch {torch.get_num_threads()}); "
          f"load average {os.getloadavg()[0]:.2f}; median of {ARGS.repeats} runs after one warmup")
    print(f"  {'':<24} {'seconds':>8} {'tokens/s':>9} {'ms/token':>9}")
    tps = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        tps[name] = n / med
        print(f"  {name:<24} {med:>8.2f} {tps[name]:>9.1f} {1e3 * med / n:>9.2f}")
    ref = outputs["transformers, KV cache"]
    for name, out in outputs.items():
        same = int((out[0, 1:] == ref[0, 1:]).sum())
        print(f"  {name:<24} tokens equal to transformers (KV cache): {same}/{n}")
    print(f"npgpt cache / no cache: {tps['npgpt, KV cache'] / tps['npgpt, no cache']:.2f}x tokens/s")
    print(f"npgpt / transformers, both with a KV cache: {tps['npgpt, KV cache'] / tps['transformers, KV cache']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
