"""Peak training memory of one framework in a process of its own, for bench_train.py.

    python bench/peak_memory.py npgpt|torch CONFIG [THREADS] [ACTIVATION]

builds the model (npgpt's GPT, or the nanoGPT-style PyTorch model loaded with its weights), resets
the kernel's peak-RSS mark (writing 5 to /proc/self/clear_refs; where that is refused it falls back
to ru_maxrss, which counts from the process's start), runs MEMORY_STEPS training steps, and prints
one JSON line: peak RSS minus the RSS after building, in KiB. The npgpt process never imports torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MEMORY_STEPS = 3


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(framework: str, config: str, threads: str, activation: str) -> dict:
    import resource  # noqa: PLC0415

    sys.path.insert(0, ROOT)
    from bench import bench_train as bt  # noqa: PLC0415

    spec = bt.CONFIGS[config]
    cfg = bt.gpt_config(spec, activation)
    data = bt.batches(spec)
    bt.set_threads(max(int(t) for t in threads.split(",")))
    model, *fns = bt.npgpt_runner(cfg, data, "cpu")
    if framework == "torch":
        weights = {k: v.copy() for k, v in model.state_dict().items()}
        del model, fns
        _, *fns = bt.torch_runner(cfg, data, "cpu", weights)
        del weights
    assert framework == "torch" or "torch" not in sys.modules, "the npgpt process must not load torch"
    base = _rss_kib("VmRSS")
    try:  # "5" resets the peak RSS mark (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        how = "VmHWM after clear_refs"
    except OSError:
        how = "ru_maxrss"
    for i in range(MEMORY_STEPS):
        fns[0](i)
    peak = _rss_kib("VmHWM") if how != "ru_maxrss" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"framework": framework, "peak_growth_kib": peak - base, "base_kib": base, "how": how}


def memory_rows(config: str, threads: str, activation: str) -> list[str]:
    """One line for bench_train's table: each framework measured in a fresh process."""
    out = {}
    for fw in ("npgpt", "torch"):
        cmd = [sys.executable, os.path.abspath(__file__), fw, config, threads, activation]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[fw] = json.loads(res.stdout.strip().splitlines()[-1])
    mib = {fw: out[fw]["peak_growth_kib"] / 1024 for fw in out}
    return [f"  peak memory over {MEMORY_STEPS} train steps (peak RSS - RSS after building, own process, "
            f"{out['npgpt']['how']}): npgpt {mib['npgpt']:.0f} MiB, torch {mib['torch']:.0f} MiB, "
            f"npgpt/torch {mib['npgpt'] / mib['torch']:.2f}"]


if __name__ == "__main__":
    fw, config = sys.argv[1], sys.argv[2]
    threads = sys.argv[3] if len(sys.argv) > 3 else "2"
    activation = sys.argv[4] if len(sys.argv) > 4 else "gelu_tanh"
    print(json.dumps(memory_child(fw, config, threads, activation)))
