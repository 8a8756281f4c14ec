import torch

from huabu.deployments.backends.mmdit.config import tiny_config
from huabu.deployments.backends.mmdit.sampler import guided, shift_mu, timesteps


def test_schedule_runs_from_noise_to_data_and_shifts_with_resolution() -> None:
    cfg = tiny_config()
    small, large = timesteps(10, shift_mu(cfg, 16)), timesteps(10, shift_mu(cfg, 256))
    for t in (small, large):
        assert t[0] == 1.0 and t[-1] == 0.0 and bool((t[1:] < t[:-1]).all())
    assert bool((large[1:-1] > small[1:-1]).all())  # more tokens, more time at high noise


def test_guidance_of_one_returns_the_conditional_velocity_exactly() -> None:
    v_c, v_u = torch.randn(3, 4), torch.randn(3, 4)
    out = guided(v_c, v_u, torch.tensor([1.0, 2.0, 0.0]))
    assert torch.equal(out[0], v_c[0])
    torch.testing.assert_close(out[1], v_u[1] + 2 * (v_c[1] - v_u[1]))
    torch.testing.assert_close(out[2], v_u[2])
