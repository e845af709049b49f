"""Test-wide settings: one torch thread (the tests run many small float64 operations, for which
threading only adds overhead, and CI machines have 2 cores)."""

import torch

torch.set_num_threads(1)
