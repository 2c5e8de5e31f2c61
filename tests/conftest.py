"""Suite-wide test settings.

Tiny models run fastest on one thread, and on a shared 2-core machine OpenMP oversubscription can
make them ~100x slower; tests that need more threads set them explicitly.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download during tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a core dependency
    pass
