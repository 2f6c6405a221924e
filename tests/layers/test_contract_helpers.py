"""The layer-contract helpers in torchssm.testing themselves: they must catch what they claim to catch."""

import pytest
import torch
from torch import nn

from torchssm.testing import _perturb, check_state_is_not_mutated


def test_perturb_reaches_every_leaf_of_a_nested_state():
    state = (torch.zeros(2, 3), (torch.zeros(2, dtype=torch.complex64), torch.zeros(2, dtype=torch.long)))
    out = _perturb(state)
    assert isinstance(out, tuple) and isinstance(out[1], tuple)
    torch.testing.assert_close(out[0], torch.full((2, 3), 0.1))
    torch.testing.assert_close(out[1][0], torch.full((2,), 0.1 + 0j, dtype=torch.complex64))
    assert out[1][1].dtype == torch.long and out[1][1].tolist() == [1, 1]


class _MutatesNestedState(nn.Module):
    """A composite layer whose step writes into the inner tensor of a nested state in place (a contract breach)."""

    d_model = 4
    causal = True

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def init_state(self, batch, device=None, dtype=None):
        return (torch.zeros(batch, 4, device=device), (torch.zeros(batch, 4, device=device),))

    def step(self, x_t, state):
        outer, (inner,) = state
        inner.add_(x_t)  # in place: the caller's state changes
        return x_t * self.w, (outer, (inner,))


def test_state_mutation_check_sees_inside_nested_states():
    with pytest.raises(AssertionError):
        check_state_is_not_mutated(_MutatesNestedState())


def test_one_token_check_leaves_the_layer_as_it_was():
    """check_one_token_chunks changes every parameter in place to test the kept step weights; it restores them."""
    from torchssm.layers import build_layer
    from torchssm.testing import check_one_token_chunks

    torch.manual_seed(0)
    layer = build_layer("s4d", d_model=4, d_state=4).double()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    check_one_token_chunks(layer, length=5)
    for k, v in layer.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
