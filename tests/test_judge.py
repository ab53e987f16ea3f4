"""The judge's profile in the generation metrics: classifier confidence and vote shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdvq.evaluation.accuracy import judge_profile, predict, predict_proba
from mdvq.evaluation.generation import format_markdown

NAMES = ["walk", "sit", "fall"]


def test_judge_profile_hand_checked():
    probs = np.array([[0.8, 0.1, 0.1],   # asked walk, voted walk (0.8)
                      [0.6, 0.3, 0.1],   # asked sit, voted walk (0.6)
                      [0.2, 0.2, 0.6],   # asked sit, voted fall (0.6)
                      [0.5, 0.4, 0.1]])  # asked walk, voted walk (0.5)
    out = judge_profile(probs, np.array([0, 1, 1, 0]), NAMES)
    assert out["mean_confidence"] == pytest.approx((0.8 + 0.6 + 0.6 + 0.5) / 4)
    assert out["confidence_per_class"] == pytest.approx({"walk": 0.65, "sit": 0.6, "fall": None})
    assert out["predicted_share"] == pytest.approx({"walk": 0.75, "sit": 0.0, "fall": 0.25})


def test_judge_profile_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"must be \(N, K\)"):
        judge_profile(np.ones((3, 3)), np.zeros(2, int), NAMES)
    with pytest.raises(ValueError, match="classes, class_names"):
        judge_profile(np.ones((2, 2)), np.zeros(2, int), NAMES)


def test_predict_proba_is_the_softmax_of_the_logits_on_model_space_images():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 0]]))
        model[1].bias.zero_()
    images01 = np.array([[[[1.0, 0.5], [0.5, 0.5]]]], dtype=np.float32)  # -> [1, 0, 0, 0] in [-1, 1]
    probs = predict_proba(model, images01)
    expected = torch.softmax(torch.tensor([1.0, 0.0, 0.0]), 0).numpy()
    np.testing.assert_allclose(probs[0], expected, rtol=1e-6)
    assert predict(model, images01).tolist() == [0]


def test_markdown_shows_the_judge_beside_real_test():
    profile = judge_profile(np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]), np.array([0, 1]),
                            NAMES)
    real = judge_profile(np.eye(3), np.arange(3), NAMES)
    result = {
        "metrics": {"conditional_accuracy": 0.5, "chance_acc": 1 / 3, "trtr_acc": 1.0,
                    "fd_samples_test": 2.0, "fd_train_test_floor": 1.0, "fd_floor_std": 0.0,
                    "tstr_acc": None, "tstr_trtr_ratio": None},
        "counts": {"samples": 2, "floor_train_subset": 2, "real_train": 3, "real_val": 3,
                   "real_test": 3},
        "conditional_accuracy": {"counts": {"walk": 1, "sit": 1, "fall": 0},
                                 "per_class": {"walk": 1.0, "sit": 0.0, "fall": None}},
        "judge": {"samples": profile, "real_test": real},
        "classifier": {"checkpoint": "c.ckpt", "data_key": "k"},
        "samples": {"dir": "s"}, "frechet": {"floor_values": [1.0], "feature_dim": 8},
        "class_names": NAMES,
    }
    text = format_markdown(result)
    assert "| judge confidence (mean top-1 probability) | 0.9 | real test 1 |" in text
    assert "| walk | 1 | 1 | 0.9 / 1 | 1 / 0.333 |" in text  # every vote went to walk
    assert "| sit | 1 | 0 | 0.9 / 1 | 0 / 0.333 |" in text
