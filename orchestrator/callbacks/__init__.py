"""The Ray Tune callbacks of a run: trial status, TensorBoard runs, the cloud mirror, the disk guard, the console table."""
