"""`npgpt.lora`: LoRA adapters as PEFT defines them (the code lives in npgpt/training/lora.py)."""

from .training.lora import (LoraConfig, LoraLinear, add_lora, load_adapter, lora_layers, merge_lora,  # noqa: F401
                            read_adapter_config, save_adapter, trainable_parameters)

__all__ = ["LoraConfig", "LoraLinear", "add_lora", "merge_lora", "save_adapter", "load_adapter", "lora_layers",
           "read_adapter_config", "trainable_parameters"]
