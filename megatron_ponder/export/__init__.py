"""Hugging Face export and import: weight names, config, tokenizer, the modeling file."""
