import pytest
import torch

from conditioned_sep.film import Conditioner, film


def test_film_identity_with_gamma_one_beta_zero():
    x = torch.randn(3, 4, 5, 6)
    assert torch.equal(film(x, torch.ones(3, 4), torch.zeros(3, 4)), x)
    out = film(x, torch.full((3, 1), 2.0), torch.full((3, 1), 0.5))  # simple FiLM: one scalar pair per block
    assert torch.allclose(out, 2 * x + 0.5)


@pytest.mark.parametrize("kind", ["simple", "complex"])
@pytest.mark.parametrize("z_input", ["onehot", "embedding"])
def test_conditioner_shapes_and_initialisation(kind, z_input):
    torch.manual_seed(0)
    cond = Conditioner(n_stems=4, block_channels=(8, 16, 32), kind=kind, z_input=z_input, hidden=(16, 32))
    params = cond(torch.eye(4))
    assert len(params) == 3
    for (gamma, beta), ch in zip(params, (8, 16, 32)):
        width = ch if kind == "complex" else 1
        assert gamma.shape == beta.shape == (4, width)
        # heads start near the identity modulation: gamma ~ 1, beta ~ 0
        assert (gamma - 1).abs().max() < 0.2 and beta.abs().max() < 0.2
    # and still tell conditions apart
    assert not torch.allclose(params[0][0][0], params[0][0][1])


def test_embedding_of_a_sum_is_the_sum_of_embeddings():
    cond = Conditioner(n_stems=4, block_channels=(8,), z_input="embedding", embedding_dim=6)
    z = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(z @ cond.embedding, cond.embedding[1] + cond.embedding[2])


def test_conditioner_errors():
    with pytest.raises(ValueError, match="film must be one of"):
        Conditioner(n_stems=4, block_channels=(8,), kind="fancy")
    with pytest.raises(ValueError, match="z_input must be one of"):
        Conditioner(n_stems=4, block_channels=(8,), z_input="text")
    cond = Conditioner(n_stems=4, block_channels=(8,))
    with pytest.raises(ValueError, match=r"z must be \(batch, 4\)"):
        cond(torch.ones(2, 3))
