"""The video model: VQ-GAN tokenizer (vqgan.py) and block-causal video transformer prior
(transformer.py), their size presets (presets.py) and training loops (train_*.py)."""
