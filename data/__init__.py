"""Data: tokenizers, corpus cleaning and preprocessing, pretraining instances, masking and loading."""
