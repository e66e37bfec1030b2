"""PyTorch twins of npgpt's ops and model, used only by tests and benchmarks."""
