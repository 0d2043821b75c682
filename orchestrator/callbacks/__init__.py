"""The Ray Tune callbacks of a run: trial status and progress lines, TensorBoard runs, the
cloud mirror, the disk guard."""
