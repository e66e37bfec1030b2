"""Generation: process_logits, generate, the KV cache; loading a model from any path; sampling."""
