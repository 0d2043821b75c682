"""Running a sweep: Ray, the Tuner, the cluster checks, resume and the Optuna study it continues."""
