"""Hand-checked values for mdvq.evaluation.metrics: code counts, usage, perplexity, dead codes, PSNR."""

import math

import pytest
import torch

from mdvq.evaluation.metrics import (
    NEVER,
    CodeCounts,
    DeadCodeTracker,
    code_counts,
    codebook_usage,
    perplexity,
    psnr_per_image,
)


def test_code_counts_is_a_bincount_over_all_positions():
    indices = torch.tensor([[[0, 0], [1, 3]], [[3, 3], [0, 0]]])  # (B=2, h=2, w=2)
    assert code_counts(indices, 5).tolist() == [4, 1, 0, 3, 0]


def test_code_counts_rejects_out_of_range_and_float_indices():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        code_counts(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        code_counts(torch.tensor([-1, 2]), 4)
    with pytest.raises(TypeError, match="integer"):
        code_counts(torch.tensor([0.0, 1.0]), 4)


def test_usage_and_perplexity_of_half_the_codes_used_evenly():
    counts = code_counts(torch.tensor([0, 0, 1, 1]), 4)
    assert codebook_usage(counts) == 0.5
    assert perplexity(counts) == pytest.approx(2.0)


def test_perplexity_is_k_for_uniform_use_and_1_for_collapse():
    assert perplexity(code_counts(torch.arange(8).repeat(3), 8)) == pytest.approx(8.0)
    assert codebook_usage(code_counts(torch.arange(8), 8)) == 1.0
    collapsed = code_counts(torch.full((10,), 2), 4)
    assert perplexity(collapsed) == pytest.approx(1.0)
    assert codebook_usage(collapsed) == 0.25


def test_perplexity_of_uneven_counts_matches_the_entropy_by_hand():
    counts = torch.tensor([3, 1, 0, 0])  # p = (3/4, 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert perplexity(counts) == pytest.approx(math.exp(h))
    with pytest.raises(ValueError, match="empty"):
        perplexity(torch.zeros(4, dtype=torch.long))


def test_code_counts_metric_accumulates_batches_and_resets():
    metric = CodeCounts(4)
    metric.update(torch.tensor([[0, 0]]))
    metric.update(torch.tensor([[1, 1]]))
    assert metric.compute().tolist() == [2, 2, 0, 0]
    metric.reset()
    metric.update(torch.tensor([3]))
    assert metric.compute().tolist() == [0, 0, 0, 1]


def test_dead_codes_are_those_not_selected_in_the_last_n_steps():
    tracker = DeadCodeTracker(5)
    tracker.update(torch.tensor([0, 1]), step=1)
    tracker.update(torch.tensor([1, 2]), step=2)
    tracker.update(torch.tensor([2]), step=3)
    assert tracker.last_used_step.tolist() == [1, 2, 3, NEVER, NEVER]
    # window 1 = step 3: alive {2}; window 2 = steps 2..3: alive {1, 2}; 3: alive {0, 1, 2}
    assert tracker.dead_count(3, window=1) == 4
    assert tracker.dead_count(3, window=2) == 3
    assert tracker.dead_count(3, window=3) == 2
    # never-selected codes stay dead however long the window
    assert tracker.dead_count(3, window=1000) == 2
    assert tracker.latest_step == 3
    with pytest.raises(ValueError, match="window"):
        tracker.dead_count(3, window=0)


def test_dead_code_tracker_state_restores_from_a_state_dict():
    tracker = DeadCodeTracker(3)
    tracker.update(torch.tensor([2]), step=7)
    restored = DeadCodeTracker(3)
    restored.load_state_dict(tracker.state_dict())
    assert restored.last_used_step.tolist() == [NEVER, NEVER, 7]
    assert restored.dead_count(7, window=1) == 2


def test_psnr_of_mse_001_is_20_db():
    target = torch.full((1, 1, 4, 4), 0.5)
    assert psnr_per_image(target + 0.1, target).item() == pytest.approx(20.0, abs=1e-4)


def test_psnr_is_per_image_so_its_mean_is_not_the_psnr_of_the_mean_mse():
    target = torch.full((2, 1, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 1e-2 -> 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    per_image = psnr_per_image(pred, target)
    assert per_image.shape == (2,)
    assert per_image.tolist() == pytest.approx([20.0, 40.0], abs=1e-3)
    assert per_image.mean().item() == pytest.approx(30.0, abs=1e-3)
    psnr_of_mean_mse = 10 * math.log10(1 / ((1e-2 + 1e-4) / 2))  # 22.97 dB: not what we report
    assert abs(per_image.mean().item() - psnr_of_mean_mse) > 7


def test_psnr_uses_data_range_and_checks_shapes():
    target = torch.zeros(1, 3, 2, 2)
    assert psnr_per_image(target + 0.2, target, data_range=2.0).item() == pytest.approx(
        10 * math.log10(4 / 0.04), abs=1e-4
    )
    with pytest.raises(ValueError, match="differ"):
        psnr_per_image(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
