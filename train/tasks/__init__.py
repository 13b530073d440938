"""Training tasks: what each model family gives the shared loop in `train/engine.py`."""
