"""Shipped IR-CM checkpoints (safetensors) and their model cards, installed as streamrestore.weights."""
