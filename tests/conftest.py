"""Shared test configuration.

The oracle's tensors are tiny (batches of tens of points, d <= 8): torch's intra-op threads only add overhead there
(one denoiser call measured 0.3 ms on 1 thread, 8 ms on 2 threads of a loaded 2-core machine), so tests run
single-threaded.
"""

import torch

torch.set_num_threads(1)
