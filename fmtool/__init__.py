"""fmtool: train BERT-style NER and text-classification models and audit what they do to people."""

__version__ = "0.1.0"
