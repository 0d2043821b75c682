"""qlora-sweep worker side: the QLoRA trial that runs inside Ray Tune (never imports orchestrator)."""

import logging

# bitsandbytes tries, when it is imported on a CPU with AVX512-BF16, to fetch a faster 4-bit
# kernel from the Hub's "kernels" package and warns when it cannot (no package, no network);
# it then uses its own CPU kernel, which is what every run here uses. The warning is silenced
# for the driver and every worker, which import this package before bitsandbytes.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
