"""The training loop (loop.py) and what it needs: devices and precision, checkpoints, data parallelism, freezing."""
