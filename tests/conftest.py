"""Suite-wide guards: every test starts from torch's defaults, whatever ran before it."""

import pytest
import torch

# Tiny networks run fastest on one thread; xdist workers would otherwise oversubscribe cores.
torch.set_num_threads(1)
# Captured once: a fixture of wider scope may change the default before a test starts.
_DTYPE, _THREADS = torch.get_default_dtype(), torch.get_num_threads()


@pytest.fixture(autouse=True)
def _restore_torch_defaults():
    yield
    torch.set_default_dtype(_DTYPE)
    torch.set_num_threads(_THREADS)
