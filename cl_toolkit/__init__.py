"""cltk: a contrastive-learning toolkit. Library first; ``cltk`` is a thin CLI over it."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads (torch's and Faiss's) sleep instead of spinning while they wait for work. On a
# machine where another process holds a core, spinning threads burn the cores the busy thread
# needs; passive waiting keeps throughput in proportion to the CPU the process gets (measured:
# docs/benchmarks.md, "A busy CPU"). It must be set before torch or Faiss is imported, hence
# here; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
