"""qlora-sweep driver side: config, pre-flight, the Ray Tune sweep, results (runs on the driver)."""
