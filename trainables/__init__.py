"""qlora-sweep worker side: the QLoRA trial that runs inside Ray Tune (never imports orchestrator)."""
