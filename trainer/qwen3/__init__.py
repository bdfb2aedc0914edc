"""Floor 2, the model: config, weights, the forward pass, 4-bit quantization, LoRA, generation."""
