"""Condensation methods (DM, GM, TM) and precomputed condensed sets, on the 8 x 8 digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import (
    MEAN_STD,
    CondenseConfig,
    MFCRunConfig,
    TMConfig,
    protocol_value,
)
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.models import build_model
from sustainml_exp.families.mfc_coreset.selection import make_selector
from sustainml_exp.families.mfc_coreset.selection.condensation import (
    DSA_OPS,
    ZCAWhitening,
    augment_ops,
    initial_pixels,
    load_condensed_file,
    read_condensed_file,
    siamese_augment,
)
from sustainml_exp.families.mfc_coreset.selection.gm import class_matching_distance, dc_loops, gradient_distance
from sustainml_exp.families.mfc_coreset.selection.tm import (
    TMSelector,
    Trajectories,
    normalised_distance,
    unroll_student,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS_MEAN_STD = MEAN_STD["digits"]


def _cfg(method: str, k: int, **condense) -> MFCRunConfig:
    cfg = MFCRunConfig(dataset="digits", method=method, k=k, model="convnet", condense=CondenseConfig(**condense))
    cfg.validate()
    return cfg


def _per_class(train: TrainSet, n: int) -> TrainSet:
    rows = np.concatenate([train.class_indices(c)[:n] for c in range(train.n_classes)])
    return TrainSet(x=train.x[rows], y=train.y[rows], n_classes=train.n_classes, dataset=train.dataset)


def _convnet(seed: int):
    torch.manual_seed(seed)
    return build_model("convnet", (1, 8, 8), 10, DIGITS_MEAN_STD)


def _check_condensed(result, k: int) -> None:
    assert result.indices.dtype == np.int64 and result.indices.size == 0
    assert result.images.shape == (10 * k, 1, 8, 8) and result.images.dtype == torch.float32
    assert result.images.device.type == "cpu"
    assert float(result.images.min()) >= 0.0 and float(result.images.max()) <= 1.0
    assert torch.equal(result.labels, torch.arange(10).repeat_interleave(k))
    assert result.labels.dtype == torch.int64


def _dm_objective(train: TrainSet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """DM's distance on three fixed random networks with 40 fixed real images per class (no augmentation)."""
    total = 0.0
    with torch.no_grad():
        for seed in range(3):
            net = _convnet(100 + seed)
            for c in range(10):
                real = net.embed(train.x[train.class_indices(c)[:40]]).mean(0)
                total += float(((real - net.embed(images[labels == c]).mean(0)) ** 2).sum())
    return total / 3


# --------------------------------------------------------------------------------------------------- DM


def test_dm_condenses_noise_into_pixels_and_lowers_the_matching_loss(digits_train) -> None:
    k = 2
    selector = make_selector(_cfg("dm", k, iterations=25, batch_real=8, init="noise", lr_img=10.0))
    result = selector.select(digits_train, k, seed=0)
    _check_condensed(result, k)
    assert result.info["condense_iterations"] == 25 and result.info["condense_source"] == "dm"
    history = selector.loss_history
    assert len(history) == 25 and np.isfinite(history).all()
    assert result.info["condense_loss_first"] == history[0]
    assert np.mean(history[-5:]) < 0.95 * np.mean(history[:5])
    # The same objective on networks and batches the run never saw: the images moved towards the real classes.
    start, start_labels = initial_pixels(digits_train, k, "noise", torch.Generator().manual_seed(0))
    assert _dm_objective(digits_train, result.images, result.labels) < 0.97 * _dm_objective(
        digits_train, start, start_labels)


def test_dm_is_deterministic_for_a_seed_and_changes_with_it(digits_train) -> None:
    cfg = _cfg("dm", 1, iterations=3, batch_real=8)
    first = make_selector(cfg).select(digits_train, 1, seed=4)
    again = make_selector(cfg).select(digits_train, 1, seed=4)
    other = make_selector(cfg).select(digits_train, 1, seed=5)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    _check_condensed(first, 1)


def test_k_larger_than_a_class_is_a_config_error(digits_train) -> None:
    with pytest.raises(ConfigError, match="k=500 is larger than"):
        make_selector(_cfg("dm", 500, iterations=1)).select(digits_train, 500, seed=0)


# --------------------------------------------------------------------------------------------------- GM


def test_gradient_distance_is_dc_layerwise_one_minus_cosine() -> None:
    gen = torch.Generator().manual_seed(0)
    conv = torch.randn(4, 2, 3, 3, generator=gen)
    linear = torch.randn(3, 5, generator=gen)
    bias = torch.randn(4, generator=gen)
    assert abs(float(gradient_distance([conv, linear, bias], [conv, linear, -bias]))) < 1e-5  # 1-D: ignored
    assert abs(float(gradient_distance([conv, linear], [-conv, -linear])) - 2 * (4 + 3)) < 1e-4
    scaled = conv * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1)
    assert abs(float(gradient_distance([scaled], [conv]))) < 1e-5  # per output channel: scale-free
    other = torch.randn(4, 2, 3, 3, generator=gen)
    rows_a, rows_b = conv.reshape(4, -1), other.reshape(4, -1)
    expected = (1 - F.cosine_similarity(rows_a, rows_b, dim=1)).sum()
    assert abs(float(gradient_distance([other], [conv])) - float(expected)) < 1e-4
    assert dc_loops(1) == (1, 1) and dc_loops(10) == (10, 50) and dc_loops(15) == (10, 50) and dc_loops(80) == (50, 10)


def test_gm_image_gradient_lowers_the_matching_distance_on_its_network(digits_train) -> None:
    # float64 and a step of norm 1e-4: in float32 the distance's rounding swamps a first-order change, and a step
    # of 1e-3 already crosses ReLU kinks of this rough objective.
    net = _convnet(0).double()
    matched = [p for p in net.parameters() if p.ndim > 1]
    real = digits_train.x[digits_train.class_indices(3)[:20]].double()
    syn = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_(True)
    distance = class_matching_distance(net, matched, real, 3, syn)
    (grad,) = torch.autograd.grad(distance, syn)
    assert torch.isfinite(grad).all() and float(grad.norm()) > 0
    step = 1e-4 / float(grad.norm())
    moved = class_matching_distance(net, matched, real, 3, (syn - step * grad).detach())
    drop = float(distance.detach() - moved.detach())
    assert 0.5 * step * float(grad.norm()) ** 2 < drop < 1.5 * step * float(grad.norm()) ** 2


def test_gm_condenses_real_images_deterministically(digits_train) -> None:
    train = _per_class(digits_train, 12)
    cfg = _cfg("gm", 1, iterations=2, batch_real=8)
    selector = make_selector(cfg)
    result = selector.select(train, 1, seed=2)
    _check_condensed(result, 1)
    assert len(selector.loss_history) == 2 and np.isfinite(selector.loss_history).all()
    assert result.info["condense_outer_loop"] == 1 and result.info["condense_inner_loop"] == 1
    assert torch.equal(make_selector(cfg).select(train, 1, seed=2).images, result.images)
    start, _ = initial_pixels(train, 1, "real", torch.Generator().manual_seed(2))
    assert not torch.equal(result.images, start)


# --------------------------------------------------------------------------------------------------- TM


def test_student_unrolled_on_the_experts_batches_reproduces_the_expert(digits_train) -> None:
    net = _convnet(1)
    gen = torch.Generator().manual_seed(3)
    batches = [(digits_train.x[rows], digits_train.y[rows])
               for rows in torch.randperm(len(digits_train.y), generator=gen)[:48].view(3, 16)]
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for images, labels in batches:
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()
    target = {name: p.detach().clone() for name, p in net.named_parameters()}
    assert float(normalised_distance(unroll_student(net, start, batches, 0.01), start, target).detach()) < 1e-8
    assert abs(float(normalised_distance(start, start, target)) - 1.0) < 1e-6
    # The learnable step size is pulled back towards the expert's from either side.
    for lr, sign in ((0.013, 1.0), (0.007, -1.0)):
        step = torch.tensor(lr, requires_grad=True)
        images = batches[0][0].clone().requires_grad_(True)
        student = unroll_student(net, start, [(images, batches[0][1])] + batches[1:], step)
        step_grad, image_grad = torch.autograd.grad(normalised_distance(student, start, target), [step, images])
        assert sign * float(step_grad) > 0
        assert torch.isfinite(image_grad).all() and float(image_grad.abs().max()) > 0


def test_tm_lowers_its_normalised_distance_and_is_deterministic(digits_train) -> None:
    train = _per_class(digits_train, 20)
    cfg = _cfg("tm", 1, iterations=10, init="noise", tm=TMConfig(syn_steps=3))
    selector = make_selector(cfg)
    result = selector.select(train, 1, seed=0)
    _check_condensed(result, 1)
    history = selector.loss_history
    assert len(history) == 10 and np.isfinite(history).all()
    # Three student steps on ten images overshoot one expert step on 200: the step size and images learn to
    # follow the expert.
    assert np.mean(history[-3:]) < 0.5 * np.mean(history[:3])
    assert 0 < result.info["condense_syn_lr"] < 0.01
    assert len(selector.trajectories) == result.info["condense_experts"] == 2
    # The short protocol matches start epochs 0 and 1 with a span of 1: experts train 2 epochs (3 snapshots).
    assert result.info["condense_expert_epochs_trained"] == 2
    assert all(trajectory.shape[0] == 3 for trajectory in selector.trajectories.experts)
    assert torch.equal(make_selector(cfg).select(train, 1, seed=0).images, result.images)


@pytest.mark.parametrize("dataset, values", [
    ("cifar10", (100, 50, 40, 2, 30, None, False, 1000.0, 1e-5, 0.001, 5000)),
    ("cifar100", (100, 50, 40, 2, 80, 125, True, 1000.0, 1e-5, 0.01, 5000)),
    ("tinyimagenet", (100, 50, 40, 2, 20, 300, False, 10000.0, 1e-4, 0.01, 5000)),
    ("svhn", (100, 50, 40, 2, 30, None, False, 1000.0, 1e-5, 0.001, 5000)),
    ("digits", (2, 2, 2, 1, 10, 256, False, 1000.0, 1e-7, 0.01, 20)),
])
def test_tm_defaults_to_mtts_published_protocol_and_a_short_one_on_digits(dataset: str, values: tuple) -> None:
    # batch_real as the experiment's YAML sets it for the dataset.
    cfg = MFCRunConfig(dataset=dataset, method="tm", model="convnet",
                       condense=CondenseConfig(batch_real=protocol_value(dataset, "condense_batch_real")))
    cfg.validate()
    p = cfg.tm_protocol
    assert (p.experts, p.expert_epochs, p.max_start_epoch, p.expert_span, p.syn_steps, p.batch_syn, p.zca, p.lr_img,
            p.lr_lr, p.syn_lr, p.iterations) == values
    assert cfg.condense_iterations == values[-1]
    assert cfg.record_fields()["condense_protocol"] == ("short" if dataset == "digits" else "published")
    if dataset == "svhn":
        assert p.source == "MTT CIFAR-10 IPC 50 (MTT has no svhn row)"


def test_condense_protocol_names_short_published_and_custom_runs() -> None:
    assert MFCRunConfig(method="rand").record_fields()["condense_protocol"] == ""
    assert MFCRunConfig(dataset="cifar10", method="dm").condense_protocol == "published"
    custom = CondenseConfig(tm=TMConfig(syn_steps=3))
    assert MFCRunConfig(dataset="cifar10", method="tm", condense=custom).condense_protocol == "custom"
    assert MFCRunConfig(method="dm", condense=CondenseConfig(iterations=5, batch_real=64)).condense_protocol == "custom"
    assert MFCRunConfig(method="dm", condense=CondenseConfig(batch_real=64)).condense_protocol == "short"
    assert MFCRunConfig(method="tm", condense=CondenseConfig(file="set.pt")).record_fields()["condense_protocol"] == \
        "file"


def test_tm_overrides_that_do_not_fit_the_trajectories_are_one_line() -> None:
    cfg = MFCRunConfig(dataset="cifar10", method="tm", model="convnet",
                       condense=CondenseConfig(tm=TMConfig(expert_epochs=10)))
    with pytest.raises(ConfigError, match=r"max_start_epoch=40 and expert_span=2 need experts of 41 epochs, but "
                                          r"expert_epochs=10"):
        cfg.validate()


def test_zca_whitening_on_a_hand_computed_case() -> None:
    # Mean 0, unbiased covariance diag(2/3, 8/3): whitening divides each axis by sqrt(variance + 0.1).
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]).view(4, 1, 1, 2)
    zca = ZCAWhitening(z)
    expected = torch.tensor([[1 / (2 / 3 + 0.1) ** 0.5, 0.0], [-1 / (2 / 3 + 0.1) ** 0.5, 0.0],
                             [0.0, 2 / (8 / 3 + 0.1) ** 0.5], [0.0, -2 / (8 / 3 + 0.1) ** 0.5]]).view(4, 1, 1, 2)
    torch.testing.assert_close(zca.whiten(z), expected)
    torch.testing.assert_close(zca.unwhiten(zca.whiten(z)), z)
    shifted = z + 3.0  # the mean is removed before whitening and restored after
    torch.testing.assert_close(ZCAWhitening(shifted).whiten(shifted), expected)


def test_tm_protocol_wiring_on_tiny_shapes(digits_train, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZCA, start epochs below max_start_epoch matched expert_span epochs ahead, every expert used in turn,
    batch_syn, and an expert buffer on disk that a second run reads instead of training."""
    train = _per_class(digits_train, 20)
    tm = TMConfig(experts=3, expert_epochs=4, max_start_epoch=3, expert_span=2, syn_steps=2, batch_syn=7, zca=True,
                  buffer_dir=str(tmp_path / "buffer"))
    cfg = _cfg("tm", 1, iterations=12, tm=tm)
    requested: list[tuple[int, int]] = []
    params = Trajectories.params

    def recording(self, expert, epoch, device):
        requested.append((expert, epoch))
        return params(self, expert, epoch, device)

    monkeypatch.setattr(Trajectories, "params", recording)
    selector = make_selector(cfg)
    first = selector.select(train, 1, seed=0)
    _check_condensed(first, 1)
    info = first.info
    assert info["condense_zca"] is True and info["condense_batch_syn"] == 7 and info["condense_syn_steps"] == 2
    assert info["condense_expert_epochs_trained"] == 4 and info["condense_experts"] == 3
    starts, targets = requested[0::2], requested[1::2]
    assert len(starts) == 12 and {epoch for _, epoch in starts} <= {0, 1, 2}
    assert all(t == (e, s + 2) for (e, s), t in zip(starts, targets))
    assert sorted(e for e, _ in starts) == [0] * 4 + [1] * 4 + [2] * 4  # four passes over the three experts
    files = sorted((tmp_path / "buffer").glob("tm-digits-*-expert*.pt"))
    assert len(files) == 3 and all(trajectory.shape[0] == 5 for trajectory in selector.trajectories.experts)

    def no_training(*args, **kwargs):
        raise AssertionError("the buffer should have been read")

    monkeypatch.setattr(TMSelector, "_train_expert", no_training)
    assert torch.equal(make_selector(cfg).select(train, 1, seed=0).images, first.images)
    monkeypatch.undo()
    # The same experts kept in memory give the same images: the buffer does not depend on where it is kept.
    in_memory = _cfg("tm", 1, iterations=12, tm=TMConfig(**{**vars(tm), "buffer_dir": None}))
    assert torch.equal(make_selector(in_memory).select(train, 1, seed=0).images, first.images)


# ------------------------------------------------------------------------------------- shared pieces


def test_real_initialisation_draws_distinct_images_of_each_class(digits_train) -> None:
    images, labels = initial_pixels(digits_train, 3, "real", torch.Generator().manual_seed(0))
    assert torch.equal(labels, torch.arange(10).repeat_interleave(3))
    flat = digits_train.x.flatten(1)
    for row, label in zip(images.flatten(1), labels):
        matches = torch.nonzero((flat == row).all(dim=1)).flatten()
        assert len(matches) >= 1 and int(digits_train.y[matches[0]]) == int(label)
    assert len({tuple(row.tolist()) for row in images.flatten(1)}) == 30
    again, _ = initial_pixels(digits_train, 3, "real", torch.Generator().manual_seed(0))
    other, _ = initial_pixels(digits_train, 3, "real", torch.Generator().manual_seed(1))
    assert torch.equal(images, again) and not torch.equal(images, other)
    noise, _ = initial_pixels(digits_train, 3, "noise", torch.Generator().manual_seed(0))
    assert noise.shape == (30, 1, 8, 8) and 0 <= float(noise.min()) and float(noise.max()) <= 1


@pytest.mark.parametrize("op", DSA_OPS)
def test_siamese_augmentation_pairs_images_and_passes_gradients(op: str) -> None:
    z = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = siamese_augment(z, op, seed=11)
    assert out.shape == z.shape
    torch.testing.assert_close(siamese_augment(z[:2], op, seed=11), out[:2])  # same parameters for image i
    assert not torch.equal(siamese_augment(z, op, seed=12), out) or op == "flip"
    out.square().sum().backward()
    assert torch.isfinite(z.grad).all() and float(z.grad.abs().sum()) > 0
    if op == "crop":  # whole-pixel shifts copy values or fill zeros
        values = set(np.round(z.detach().numpy().ravel(), 5)) | {0.0}
        assert set(np.round(out.detach().numpy().ravel(), 5)) <= values


def test_digits_are_not_flipped_but_colour_images_are() -> None:
    assert "flip" not in augment_ops("digits") and "flip" not in augment_ops("mnist")
    assert augment_ops("cifar10") == DSA_OPS


# ------------------------------------------------------------------------------- precomputed sets


def _class_major_set(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat(k)  # interleaved on purpose: the loader sorts by class
    return torch.rand(10 * k, 1, 8, 8, generator=gen), labels


def _sorted(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(labels, stable=True)
    return images[order], labels[order]


@pytest.mark.parametrize("layout", ["dict", "pair", "dc_data", "npz"])
def test_condensed_file_round_trip(tmp_path, layout: str) -> None:
    images, labels = _class_major_set(3)
    if layout == "npz":
        path = tmp_path / "set.npz"
        np.savez(path, images=images.numpy(), labels=labels.numpy())
    else:
        path = tmp_path / "set.pt"
        content = {"dict": {"images": images, "labels": labels}, "pair": (images, labels),
                   "dc_data": {"data": [[images, labels], [images * 0, labels]], "accs_all_exps": {"ConvNet": [0.5]}}}
        torch.save(content[layout], path)
    loaded, loaded_labels = load_condensed_file(path, "digits", 3, "pixels")
    expected, expected_labels = _sorted(images, labels)
    assert torch.equal(loaded, expected) and torch.equal(loaded_labels, expected_labels)
    assert loaded.dtype == torch.float32 and loaded_labels.dtype == torch.int64


def test_meanstd_file_is_turned_back_into_pixels(tmp_path) -> None:
    images, labels = _class_major_set(2)
    mean, std = DIGITS_MEAN_STD
    normalised = (images - mean[0]) / std[0]
    path = tmp_path / "dc.pt"
    torch.save({"images": normalised, "labels": labels}, path)
    pixels, _, info = read_condensed_file(path, "digits", 2, "meanstd")
    torch.testing.assert_close(pixels, _sorted(images, labels)[0], atol=1e-6, rtol=0)
    assert info["condense_clamped_fraction"] == 0.0
    normalised[0, 0, 0, :4] = 10.0  # four values far above white: clamped and counted
    torch.save({"images": normalised, "labels": labels}, path)
    pixels, _, info = read_condensed_file(path, "digits", 2, "meanstd")
    assert float(pixels.max()) == 1.0 and info["condense_clamped_fraction"] == pytest.approx(4 / pixels.numel())


def _one_line_error(path, k: int = 3, file_format: str = "pixels") -> str:
    with pytest.raises(ConfigError) as caught:
        load_condensed_file(path, "digits", k, file_format)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_condensed_file_errors_are_one_line_and_name_the_file(tmp_path) -> None:
    images, labels = _class_major_set(3)
    assert "no such file" in _one_line_error(tmp_path / "missing.pt")
    nhwc = tmp_path / "nhwc.pt"
    torch.save({"images": images.permute(0, 2, 3, 1), "labels": labels}, nhwc)
    assert "NHWC" in _one_line_error(nhwc) and "(N, 1, 8, 8)" in _one_line_error(nhwc)
    normalised = tmp_path / "normalised.npz"
    np.savez(normalised, images=(images.numpy() - 0.5) * 4, labels=labels.numpy())
    message = _one_line_error(normalised)
    assert "condense.file_format=meanstd" in message and "ZCA" in message
    assert "has 3 images per class" in _one_line_error(normalised, k=5)
    uneven = tmp_path / "uneven.pt"
    torch.save({"images": images[:-1], "labels": labels[:-1]}, uneven)
    assert "between 2 (class 9) and 3 (class 0) images per class" in _one_line_error(uneven)
    out_of_range = tmp_path / "labels.pt"
    torch.save({"images": images, "labels": labels + 1}, out_of_range)
    assert "labels range from 1 to 10" in _one_line_error(out_of_range)
    non_finite = tmp_path / "nan.pt"
    torch.save({"images": images.clone().fill_(float("nan")), "labels": labels}, non_finite)
    assert "NaN" in _one_line_error(non_finite)
    wrong_keys = tmp_path / "keys.npz"
    np.savez(wrong_keys, x=images.numpy(), y=labels.numpy())
    assert "missing ['images', 'labels']" in _one_line_error(wrong_keys)
    text = tmp_path / "set.txt"
    text.write_text("not a tensor")
    assert "allowed: .pt, .pth (torch) or .npz" in _one_line_error(text)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    assert "cannot be read" in _one_line_error(garbage)


@pytest.mark.parametrize("method", ["dm", "gm", "tm"])
def test_a_set_condensation_file_replaces_condensing(tmp_path, digits_train, method: str) -> None:
    images, labels = _class_major_set(2, seed=7)
    path = tmp_path / "set.npz"
    np.savez(path, images=images.numpy(), labels=labels.numpy())
    selector = make_selector(_cfg(method, 2, file=str(path)))
    result = selector.select(digits_train, 2, seed=0)
    _check_condensed(result, 2)
    assert torch.equal(result.images, _sorted(images, labels)[0])
    assert result.info["condense_source"] == "file" and result.info["condense_file"] == str(path)
    assert result.info["condense_iterations"] == 0 and selector.loss_history == []
