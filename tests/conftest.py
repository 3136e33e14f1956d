"""Suite-wide guards: every test starts from torch's defaults, whatever ran before it."""
import pytest
import torch

# Tiny networks run fastest on one thread; xdist workers would otherwise oversubscribe cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_defaults():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
