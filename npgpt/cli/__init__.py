"""The `npgpt` command (also `python -m npgpt.cli`).

Each subcommand is two small functions: `_add_<name>(parser)` declares its flags and `_run_<name>(args)`
does the work and returns the exit status. Register both in COMMANDS to add one.
"""

from __future__ import annotations

import argparse
import re
import sys

from ..backend import default_device, devices


def _seed(flag: str):
    """argparse type: an integer >= 0 (NumPy's generators refuse a negative seed), named in the error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"expects an integer >= 0, got {text!r}")
        return value

    return parse


class Parser(argparse.ArgumentParser):
    """argparse with a short error: the one line that matters, then where the usage is, not the
    whole usage block first."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def _add_gradcheck(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_seed("--seed"), default=0, help="seed for the inputs, projections and directions, >= 0")
    p.add_argument("--only", nargs="+", metavar="OP", help="check only these ops (names in npgpt.functional)")


def _run_gradcheck(args) -> int:
    from ..gradcheck import format_table, run_all  # noqa: PLC0415 - import what the subcommand needs

    try:
        results = run_all(seed=args.seed, only=args.only)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    print(format_table(results))
    return 0 if results and all(r.passed for r in results) else 1


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="out", help="folder for demo-data/ and demo/ (default: out)")
    p.add_argument("--max-iters", type=int, help="fewer steps for a quick look (default: 2500)")


def _run_demo(args) -> int:
    from .demo import run_demo  # noqa: PLC0415

    return _guarded("demo", lambda: run_demo(args.root, args.max_iters))


def _guarded(name: str, fn, on_error=None) -> int:
    """Run fn(); a user error prints one line and gives exit status 2, a diverged run 1, Ctrl-C 130.
    on_error(status), when given, is called after the message (a rank of a data-parallel run aborts
    the whole job there)."""
    from ..training.loop import TrainingDiverged  # noqa: PLC0415

    try:
        return fn()
    except TrainingDiverged as e:
        print(f"npgpt {name}: {e}", file=sys.stderr)
        code = 1
    except (ValueError, RuntimeError, OSError) as e:
        print(f"npgpt {name}: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:  # a second Ctrl-C during training, or one outside it
        print(f"npgpt {name}: interrupted", file=sys.stderr)
        code = 130
    if on_error is not None:
        on_error(code)
    return code


def _add_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a UTF-8 text file, a corpus name: stdlib (offline) or shakespeare_char, or a .jsonl "
                   "file of SFT examples ({\"prompt\", \"completion\"} or {\"messages\": [...]} per line)")
    p.add_argument("--out", help="output directory (default: data/<source name>)")
    p.add_argument("--tokenizer", choices=("char", "bpe"), help="tokenizer to train (default: char)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size for --tokenizer bpe")
    p.add_argument("--tokenizer-file", help="reuse this tokenizer: a tokenizer.json, a training directory, or a GPT-2 "
                   "directory's vocab.json + merges.txt (to fine-tune)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the last fraction of tokens for validation (default: 0.1)")
    p.add_argument("--block-size", type=int, help="check now that both splits hold a block of this size")
    p.add_argument("--data-path", help="shakespeare_char: the text file, or a directory holding tinyshakespeare.txt")
    p.add_argument("--url", help="shakespeare_char: download from here instead (also $NPGPT_SHAKESPEARE_URL)")


def _run_prepare(args) -> int:
    import os  # noqa: PLC0415

    from ..data import prepare  # noqa: PLC0415

    out = args.out or os.path.join("data", os.path.splitext(os.path.basename(args.source.rstrip("/")))[0])

    def run():
        prepare(args.source, out, tokenizer=args.tokenizer, vocab_size=args.vocab_size, tokenizer_file=args.tokenizer_file,
                val_fraction=args.val_fraction, block_size=args.block_size, data_path=args.data_path, url=args.url)
        return 0

    return _guarded("prepare", run)


def _add_train(p: argparse.ArgumentParser) -> None:
    from ..flags import add_flags  # noqa: PLC0415
    from ..models.config import ARCHS  # noqa: PLC0415
    from ..training.config import TrainConfig  # noqa: PLC0415

    p.add_argument("--config", help="a .toml or .json file of TrainConfig fields (the model's flat, or in a "
                   "[model] table); flags override it")
    p.add_argument("--arch", choices=tuple(ARCHS), help="start the model from this family's defaults "
                   "(gpt2: layernorm, GELU MLP, learned positions, biases; llama/qwen2/qwen3: rmsnorm, SwiGLU, "
                   "RoPE, ...); every model field stays a flag")
    p.add_argument("--nproc", type=int, help="data-parallel: run N ranks through mpiexec (needs npgpt[dist]); "
                   "equals one process with grad_accum x N. Each rank gets cores/N BLAS threads unless "
                   "OMP_NUM_THREADS is set")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out-dir that holds a run (removes its checkpoints and log; without this "
                        "a scratch run or fine-tune there is refused)")
    add_flags(p, TrainConfig)


def _run_train(args) -> int:
    from ..training import dist  # noqa: PLC0415
    from ..training.loop import config_from_cli, train  # noqa: PLC0415

    def run():
        try:
            cfg = config_from_cli(args)
        except ValueError as e:  # TrainConfig names its fields; on the command line they are flags
            raise ValueError(re.sub(r"TrainConfig\.(\w+)", lambda m: "--" + m[1].replace("_", "-"), str(e))) from None
        result = train(cfg, overwrite=args.overwrite)
        return 130 if result.interrupted else 0

    def ranks_or_launch():
        size = dist.launched_size()
        if args.nproc is not None and size == 1 and args.nproc != 1:  # not under mpiexec yet: start N ranks
            return dist.launch(args.nproc, args.argv)  # mpiexec's exit status
        if args.nproc is not None and args.nproc != size:
            raise ValueError(f"--nproc {args.nproc}, but mpiexec started {size} processes")
        return dist.world()

    world = _guarded("train", ranks_or_launch)
    if isinstance(world, int):
        return world
    if world.size == 1:
        return _guarded("train", run)
    return dist.guard(world, lambda: _guarded(f"train (rank {world.rank} of {world.size})", run, on_error=world.abort))


def _none_or(kind):
    def parse(text):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a training directory (its best.safetensors, else ckpt.safetensors), a checkpoint "
                                      "file, a Hugging Face directory of GPT-2, Llama, Qwen2 or Qwen3 (config.json, "
                                      "model.safetensors, vocab.json + merges.txt or tokenizer.json), "
                                      "or a Hugging Face hub name such as gpt2 (downloaded with npgpt[hf], then cached)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="text to continue (default: <|endoftext|> if the tokenizer has it, else a newline)")
    prompt.add_argument("--prompt-file", help="continue the text of this UTF-8 file")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--max-new-tokens", type=int, help="new tokens per sample (default: 500)")
    length.add_argument("--max-length", type=int, help="prompt + new tokens per sample, instead of --max-new-tokens")
    p.add_argument("--num-samples", type=int, default=1, help="samples, generated one after another (default: 1)")
    p.add_argument("--eos", action="store_true", help="end a sample at the end-of-text token <|endoftext|>")
    _add_sampling(p)


def _add_sampling(p: argparse.ArgumentParser) -> None:
    """The sampling options `sample` and `chat` share."""
    none_or = _none_or
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--do-sample", dest="do_sample", action="store_true", default=True,
                      help="draw each token from the processed distribution (the default)")
    mode.add_argument("--greedy", dest="do_sample", action="store_false",
                      help="take the likeliest token each step (temperature, top-k and top-p then do nothing)")
    p.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative (default: 0.8)")
    p.add_argument("--top-k", type=none_or(int), default=200, help="keep the k likeliest tokens, >= 1, or none (default: 200)")
    p.add_argument("--top-p", type=none_or(float), default=None,
                   help="keep the likeliest tokens whose probability reaches p, in (0, 1], or none (default: none)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 0; above 1 makes tokens already in the text less likely (default: 1.0, which changes nothing)")
    p.add_argument("--seed", type=_seed("--seed"), default=1337, help="seed of the sampling generator, >= 0 (default: 1337)")
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="recompute the whole context for every token instead of keeping a KV cache")
    p.add_argument("--device", default=default_device(), choices=devices(), help="default: $NPGPT_DEVICE, else cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))


def _run_sample(args) -> int:
    from ..generation.sample import sample  # noqa: PLC0415

    def run():
        prompt = args.prompt
        if args.prompt_file is not None:
            try:
                with open(args.prompt_file, encoding="utf-8") as f:
                    prompt = f.read()
            except UnicodeDecodeError as e:
                raise ValueError(f"{args.prompt_file}: not UTF-8 text ({e})") from None
        max_new = 500 if args.max_new_tokens is None and args.max_length is None else args.max_new_tokens
        sample(args.checkpoint, prompt, num_samples=args.num_samples, max_new_tokens=max_new, max_length=args.max_length,
               do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
               repetition_penalty=args.repetition_penalty, stop_at_eos=args.eos, seed=args.seed,
               use_cache=args.use_cache, dtype=args.dtype, device=args.device, out=sys.stdout)
        return 0

    return _guarded("sample", run)


def _add_chat(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a training directory or checkpoint file (fine-tuned on SFT data), or a Hugging "
                                      "Face directory (its chat template from tokenizer_config.json)")
    p.add_argument("--system", help="a system message that opens the conversation (kept when old turns are dropped)")
    p.add_argument("--chat-template", help="a Jinja chat template file instead of the model's (default: its own, else ChatML)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="most tokens per reply (default: 200)")
    _add_sampling(p)


def _run_chat(args) -> int:
    from ..generation.chat import chat  # noqa: PLC0415

    def run():
        chat(args.checkpoint, system=args.system, template_file=args.chat_template, max_new_tokens=args.max_new_tokens,
             do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
             repetition_penalty=args.repetition_penalty, seed=args.seed, use_cache=args.use_cache, dtype=args.dtype,
             device=args.device, inp=sys.stdin, out=sys.stdout, note=sys.stderr)
        return 0

    return _guarded("chat", run)


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a training directory (its best.safetensors, else ckpt.safetensors) or a checkpoint file")
    p.add_argument("out_dir", help="the GPT-2 directory to write (config.json, model.safetensors, vocab.json, merges.txt, ...)")
    p.add_argument("--no-tokenizer", action="store_true", help="write the model alone, without the tokenizer's files")
    p.add_argument("--dtype", choices=("float32", "float64"), help="weights' dtype (default: as trained)")
    p.add_argument("--merge", action="store_true", help="a LoRA run: fold the adapters into the weights and write the "
                   "merged model (without it: PEFT's adapter directory, adapter_config.json + adapter_model.safetensors)")


def _run_export(args) -> int:
    from .export import export_checkpoint  # noqa: PLC0415

    def run():
        export_checkpoint(args.checkpoint, args.out_dir, tokenizer=not args.no_tokenizer, dtype=args.dtype,
                          merge=args.merge)
        return 0

    return _guarded("export", run)


def _add_plot(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="a training directory holding log.jsonl")


def _run_plot(args) -> int:
    from ..training.log import plot_losses  # noqa: PLC0415

    return _guarded("plot", lambda: 0 if plot_losses(args.out_dir) else 1)


# name -> (help, add flags, run)
COMMANDS = {
    "gradcheck": ("check every op's backward against finite differences (float64, no PyTorch)", _add_gradcheck, _run_gradcheck),
    "demo": ("what `make train` runs: prepare the stdlib corpus, train a small model into out/demo, sample", _add_demo, _run_demo),
    "prepare": ("tokenize a text file or a named corpus into train.bin/val.bin", _add_prepare, _run_prepare),
    "train": ("train a model (from scratch, resume, or fine-tune a checkpoint)", _add_train, _run_train),
    "sample": ("generate text from a checkpoint or a GPT-2 directory, streamed as it comes", _add_sample, _run_sample),
    "chat": ("talk with a fine-tuned model: its chat template, replies streamed, Ctrl-D ends", _add_chat, _run_chat),
    "export": ("write a checkpoint as a GPT-2 / Hugging Face directory (transformers' from_pretrained loads it)",
               _add_export, _run_export),
    "plot": ("draw OUT_DIR/loss.png from OUT_DIR/log.jsonl", _add_plot, _run_plot),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="npgpt", description="A GPT written from scratch on NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --nproc N` starts N copies of this command line
    return COMMANDS[args.command][2](args)

