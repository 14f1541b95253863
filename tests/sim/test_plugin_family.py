"""The plugin family: a lab's own brain (``module:callable``) recorded in archives and scored as truth."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from closedloop.errors import ClosedLoopError, ConfigError
from closedloop.sim import SimulatedV1
from closedloop.sim.archive import ArchiveSpec, make_archive
from closedloop.sim.photographs import natural_images
from closedloop.sim.scenario import load_scenario
from closedloop.sim.truth import ArchiveTruth
from tests.benchmark_scripts import load_benchmark

# A brain written the way a lab might: its own filters and rates, nothing of closedloop's.
LAB_BRAIN = textwrap.dedent(
    """
    import numpy as np

    class Population:
        def __init__(self):
            y, x = np.mgrid[-33:33, -33:33] / 10.0
            angles = np.linspace(0.0, np.pi, 5, endpoint=False)
            self.filters = np.stack(
                [np.exp(-(x**2 + y**2) / 2.0) * np.cos(3.0 * (x * np.cos(a) + y * np.sin(a))) for a in angles]
            )

        def __call__(self, images):
            drive = np.einsum("nhw,uhw->nu", np.asarray(images) - 0.5, self.filters)
            return 4.0 + 30.0 * np.maximum(drive / 20.0, 0.0) ** 1.5

    def brightness(images):  # any image size
        return 2.0 + 40.0 * np.repeat(np.asarray(images).mean(axis=(1, 2))[:, None], 5, axis=1)

    def too_fast(images):
        return np.full((len(images), 5), 5000.0)

    def broken(images):
        if len(images) > 2:
            raise RuntimeError("out of lab memory")
        return np.ones((len(images), 5))
    """
)


@pytest.fixture
def lab_module(tmp_path, monkeypatch):
    (tmp_path / "plugin_lab_v1.py").write_text(LAB_BRAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("plugin_lab_v1", None)
    yield tmp_path
    sys.modules.pop("plugin_lab_v1", None)  # another test's module of this name must be imported afresh


def scenario(folder, brain="plugin_lab_v1:Population", n_units=5, extra=""):
    path = folder / "lab.yaml"
    path.write_text(
        f"name: lab\npopulation:\n  family: plugin\n  brain: '{brain}'\n  n_units: {n_units}\n"
        f"  calibration_images: 8\n{extra}"
    )
    return path


def test_the_population_gives_the_brains_own_rates(lab_module):
    import plugin_lab_v1

    population = SimulatedV1(load_scenario(scenario(lab_module)), seed=3)
    images = natural_images(6, seed=2)
    # the brain's rate is the expected rate in the response window of a 100 ms stimulus
    np.testing.assert_allclose(population.expected_rates(images, (0.05, 0.10), 0.1), plugin_lab_v1.Population()(images))
    np.testing.assert_allclose(population.spontaneous_hz, 4.0)  # the brain's grey-screen rate
    assert set(population.unit_types) == {"plugin"} and not population.receptive_fields().any()


@pytest.mark.parametrize("layout", ["session", "pvc8"])
def test_an_archive_of_the_brain_rebuilds_it_as_truth(lab_module, tmp_path, layout):
    path = tmp_path / f"lab.{'h5' if layout == 'session' else 'mat'}"
    spec = ArchiveSpec(layout=layout, seed=1, n_images=20, n_repeats=16, scenario=scenario(lab_module))
    make_archive(path, spec)
    truth = ArchiveTruth(path)
    from closedloop.data.loader import load_dataset

    dataset = load_dataset(path)  # pvc-8's default keeps INDCENT units: a plugin brain's all count
    assert dataset.n_units == 5
    rates = truth.rates(dataset.image_ids, dataset.unit_ids)
    measured = dataset.trial_rates.mean(axis=1)
    driven = np.flatnonzero(rates.std(axis=0) > 3.0)  # across images, well above the trial noise
    assert len(driven) >= 3
    per_unit = [np.corrcoef(rates[:, unit], measured[:, unit])[0, 1] for unit in driven]
    assert np.mean(per_unit) > 0.8 and min(per_unit) > 0.6  # 16 noisy trials per image
    assert np.corrcoef(rates[:, driven].ravel(), measured[:, driven].ravel())[0, 1] > 0.9


def test_a_rigs_callable_brain_is_the_population_an_archive_of_it_records(lab_module):
    import plugin_lab_v1

    from closedloop.acquisition import BrainSpec

    source = BrainSpec(kind="callable", target="plugin_lab_v1:Population", seed=3).build()
    recorded = SimulatedV1(load_scenario(scenario(lab_module)), seed=3)
    images = natural_images(6, seed=2)
    live = source.expected_rates(images, (0.05, 0.10), 0.1)
    np.testing.assert_allclose(live, plugin_lab_v1.Population()(images))
    # one path: the live brain's time courses and noise are those an archive's population draws
    np.testing.assert_array_equal(source.population.overdispersion, recorded.overdispersion)
    np.testing.assert_array_equal(source.population.latencies_s, recorded.latencies_s)
    np.testing.assert_allclose(
        source.expected_rates(images, (0.03, 0.2), 0.15), recorded.expected_rates(images, (0.03, 0.2), 0.15)
    )
    # its spikes in the response window follow the brain's rates, here 6-240 Hz
    brain = plugin_lab_v1.Population()
    grating = np.clip(0.5 + 0.5 * brain.filters[0] / np.abs(brain.filters[0]).max(), 0.0, 1.0)
    rng = np.random.default_rng(0)
    counts = np.zeros(5)
    for _ in range(300):
        unit, times, _span = source.trial(grating, 0.1, rng)
        np.add.at(counts, unit[(times >= 0.05) & (times < 0.10)], 1)
    np.testing.assert_allclose(counts / 300 / 0.05, brain(grating[None])[0], rtol=0.1, atol=1.5)
    # a rig's images may be smaller than the simulator's aperture; the brain sees them as shown
    small = BrainSpec(kind="callable", target="plugin_lab_v1:brightness", size_px=24).build()
    tiny = natural_images(3, size_px=24, seed=1)
    np.testing.assert_allclose(small.expected_rates(tiny, (0.05, 0.10), 0.1), plugin_lab_v1.brightness(tiny))


def test_a_unit_count_other_than_the_brains_is_refused(lab_module):
    with pytest.raises(ClosedLoopError, match="gives 5 units.*n_units: 5"):
        SimulatedV1(load_scenario(scenario(lab_module, n_units=7)), seed=1)


def test_rates_no_neuron_could_fire_are_refused(lab_module):
    with pytest.raises(ClosedLoopError, match="up to 5e[+]03 Hz.*at most 1000 Hz"):
        SimulatedV1(load_scenario(scenario(lab_module, brain="plugin_lab_v1:too_fast")), seed=1)


def test_a_brain_failing_mid_archive_is_named(lab_module, tmp_path):
    spec = ArchiveSpec(seed=1, n_images=6, n_repeats=2, scenario=scenario(lab_module, brain="plugin_lab_v1:broken"))
    with pytest.raises(ClosedLoopError, match="plugin_lab_v1:broken.*out of lab memory"):
        make_archive(tmp_path / "x.h5", spec)
    assert not list(tmp_path.glob("x.h5*"))  # nothing half-written left behind


def test_the_cross_family_benchmark_takes_a_plugin_brain_at_its_own_unit_count(lab_module, tmp_path):
    module = load_benchmark("generalise")
    lab = scenario(lab_module)
    args = module.parse_args(["--families", "classic", "--scenario", f"lab={lab}", "--images", "8", "--repeats", "2"])
    assert args.family_list == ["classic", "lab"] and args.scenarios["lab"] == str(lab)
    args.out = tmp_path / "bench"
    dataset_path = module.archive("lab", args, args.scenarios)  # --units 30 does not apply: the brain gives 5
    assert ArchiveTruth(dataset_path).population.n_units == 5
    for bad in (["--scenario", "classic=x.yaml"], ["--scenario", "lab"], ["--scenario", f"lab={tmp_path}/none.yaml"]):
        with pytest.raises(SystemExit):
            module.parse_args(bad)


@pytest.mark.parametrize(
    "text",
    [
        "population:\n  family: plugin\n",  # no brain
        "population:\n  family: plugin\n  brain: lab_v1\n",  # no callable named
        "population:\n  family: plugin\n  brain: 7\n",
        "population:\n  brain: 'plugin_lab_v1:Population'\n",  # brain on the classic family
    ],
)
def test_bad_brain_fields_name_the_field(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.field == "population.brain"
