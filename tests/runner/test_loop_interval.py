"""The loop report's 95 % interval per iteration, from what was known before the images were shown."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.reports.loop_numbers import iteration_interval, synthesized_images
from closedloop.reports.loop_types import Iteration, ModelFit, SynthesizedImage


def _images(misses, spread: float = 3.0, se: float = 4.0, noise: float = 0.0) -> list[SynthesizedImage]:
    """Images promised 20 Hz whose true rates miss by ``misses`` and measured means by ``noise`` more;
    √(3² + 4²) = 5 Hz is each one's scale."""
    return [
        SynthesizedImage(
            i, 1, 10.0, 20.0, 20.0 + miss + noise, 6, true_hz=20.0 + miss, spread_hz=spread, measured_se_hz=se
        )
        for i, miss in enumerate(misses)
    ]


def _iteration(images: list[SynthesizedImage]) -> Iteration:
    return Iteration(1, 0, 3, None, None, images)


RANGE = np.full(4, 40.0)  # each image's unit's natural-image range (Hz)
MODEL = ModelFit(1, 1, 0.5, 0.5, 0.8, 100, 1.0, False, error_over_spread=2.0, interval_sds=3.0)


def test_with_enough_earlier_images_k_is_their_scaled_measured_misses_quantile():
    earlier = [_iteration(_images(np.arange(1.0, 21.0)))]  # measured misses 1..20 Hz over a 5 Hz scale
    shown = _images([-9.0, 10.0, 20.5, 30.0])
    out = iteration_interval(shown, MODEL, earlier, RANGE)
    # ⌈21 · 0.95⌉ = 20th of the 20 scaled misses 0.2…4: k = 4, ± 20 Hz, not the model's 3
    assert out["interval_sds"] == pytest.approx(4.0) and out["interval_from_images"] == 20
    assert out["interval_halfwidth_pct"] == pytest.approx(50.0)  # ± 20 Hz of a 40 Hz range
    assert [image.interval_hz for image in shown] == pytest.approx([20.0] * 4)
    assert out["true_within_interval"] == 0.5 and out["measured_within_interval"] == 0.5


def test_with_too_few_earlier_images_k_is_the_models_held_out_photographs():
    earlier = [_iteration(_images(np.arange(1.0, 19.0)))]  # 18: too few for a 95 % quantile
    shown = _images([1.0, 13.0, 16.0, -14.0], noise=1.5)
    out = iteration_interval(shown, MODEL, earlier, RANGE)
    assert out["interval_sds"] == 3.0 and out["interval_from_images"] == 0  # ± 15 Hz
    assert out["true_within_interval"] == 0.75  # |16| > 15
    assert out["measured_within_interval"] == 0.75  # measured misses 2.5, 14.5, 17.5, -12.5 Hz


def test_without_a_model_figure_or_earlier_images_there_is_no_interval():
    shown = _images([1.0, 2.0])
    shown[0].spread_hz = math.nan  # a server that sent no spread
    out = iteration_interval(shown, None, [], RANGE[:2])
    assert math.isnan(out["interval_sds"]) and math.isnan(out["true_within_interval"])
    old_model = ModelFit(1, 1, 0.5, 0.5, 0.8, 100, 1.0, False)  # fitted before the figure was recorded
    assert math.isnan(iteration_interval(shown, old_model, [], RANGE[:2])["interval_sds"])
    with_model = iteration_interval(shown, MODEL, [], RANGE[:2])
    assert with_model["true_within_interval"] == pytest.approx(1.0)  # the image without a spread left out
    assert math.isnan(shown[0].interval_hz) and shown[1].interval_hz == pytest.approx(15.0)


def test_an_image_shown_once_gets_its_units_noise_as_standard_error_and_an_interval():
    table = np.array(
        [(7, 1, 10.0, 20.0, 3.0), (8, 2, np.nan, 60.0, 5.0), (9, 1, 30.0, 30.0, 2.0)],
        dtype=[("id", "i8"), ("unit_id", "i8"), ("target_hz", "f8"), ("achieved_hz", "f8"), ("spread_hz", "f8")],
    )
    means, variances = np.full((10, 3), np.nan), np.full((10, 3), np.nan)
    means[7, 0], means[8, 1], means[9, 2], variances[9, 2] = 40.0, 0.0, 33.0, 18.0
    counts = np.zeros(10, dtype=np.int64)
    counts[[7, 8, 9]] = 1, 1, 2
    images = synthesized_images(table, means, variances, counts, noise=np.array([20.0, 10.0, 20.0]))
    assert [image.n_presentations for image in images] == [1, 1, 2]
    # once: √(noise · (promise + measured) / 2), a silent trial of a 60 Hz "max" promise too; twice: its own
    assert [image.measured_se_hz for image in images] == pytest.approx([np.sqrt(600.0), np.sqrt(300.0), 3.0])
    out = iteration_interval(images, MODEL, [], np.full(3, 100.0))
    assert [image.interval_hz for image in images] == pytest.approx(
        [3.0 * np.hypot(3.0, np.sqrt(600.0)), 3.0 * np.hypot(5.0, np.sqrt(300.0)), 3.0 * np.hypot(2.0, 3.0)]
    )
    # measured 20 Hz off (± 74: inside), 60 Hz off (± 54: outside), 3 Hz off (± 11: inside)
    assert out["measured_within_interval"] == pytest.approx(2 / 3)
