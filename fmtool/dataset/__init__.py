"""Reading, shaping and perturbing data: file formats, examples, batching, probes and lexicons."""
