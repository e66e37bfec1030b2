"""npgpt/process.py: process-wide policy is set by the commands that train, never by import or by building a model."""

import subprocess
import sys


def test_malloc_is_left_alone_by_import_and_by_building_a_model():
    code = ("import npgpt, npgpt.process as p; assert p._kept_freed_memory is None, 'changed at import'; "
            "npgpt.GPT(npgpt.GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)); "
            "assert p._kept_freed_memory is None, 'changed by GPT()'; "
            "p.keep_freed_memory(); assert p._kept_freed_memory is not None")
    subprocess.run([sys.executable, "-c", code], check=True)
