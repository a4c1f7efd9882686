"""AddInverse, Mixup, CutMix, gridify and the training collate function."""

from __future__ import annotations

import pickle

import pytest
import torch

from bcos.data.transforms import (
    AddInverse,
    CollateThen,
    RandomBatchChoice,
    RandomCutmix,
    RandomMixup,
    SplitAndGrid,
    make_train_collate,
)
from bcos.errors import ConfigError, InputError


def _batch(n: int = 8, channels: int = 3, size: int = 8, num_classes: int = 5):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, channels, size, size, generator=generator)
    targets = torch.arange(n) % num_classes
    return images, targets


def test_add_inverse_single_image_and_batch():
    image = torch.rand(3, 4, 5)
    out = AddInverse()(image)
    assert out.shape == (6, 4, 5)
    assert torch.equal(out[:3], image)
    assert torch.allclose(out[3:], 1 - image)
    batch = torch.rand(2, 3, 4, 5)
    out = AddInverse()(batch)
    assert out.shape == (2, 6, 4, 5)
    assert torch.allclose(out[:, 3:] + out[:, :3], torch.ones(2, 3, 4, 5))


def test_add_inverse_custom_dim_and_rejects_non_tensors():
    out = AddInverse(dim=-1)(torch.zeros(2, 3))
    assert out.shape == (2, 6) and out[:, 3:].eq(1).all()
    with pytest.raises(InputError, match="ToTensor"):
        AddInverse()([1.0, 2.0])


@pytest.mark.parametrize("mixer_class", [RandomMixup, RandomCutmix])
def test_mixers_make_soft_targets_that_sum_to_one(mixer_class):
    torch.manual_seed(0)
    images, targets = _batch()
    original = images.clone()
    mixed, soft = mixer_class(num_classes=5, p=1.0, alpha=1.0)(images, targets)
    assert mixed.shape == images.shape and soft.shape == (8, 5)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    assert torch.equal(images, original), "not inplace: the input must stay untouched"
    # each sample's weight goes to its own class and its rolled partner's class only
    partner = targets.roll(1, 0)
    own = soft[torch.arange(8), targets]
    other = soft[torch.arange(8), partner]
    assert torch.allclose(own + other, torch.ones(8))


def test_mixup_is_the_convex_combination_with_the_rolled_batch():
    torch.manual_seed(3)
    images, targets = _batch()
    mixed, soft = RandomMixup(num_classes=5, p=1.0, alpha=0.4)(images, targets)
    lam = soft[0, targets[0]].item()
    expected = lam * images + (1 - lam) * images.roll(1, 0)
    assert torch.allclose(mixed, expected, atol=1e-6)


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    torch.manual_seed(1)
    images, targets = _batch(size=16)
    mixed, soft = RandomCutmix(num_classes=5, p=1.0, alpha=1.0)(images, targets)
    from_partner = (mixed == images.roll(1, 0)).all(dim=1)  # [B, H, W]
    from_self = (mixed == images).all(dim=1)
    assert (from_partner | from_self).all()
    area_share = from_partner[0].float().mean().item()
    assert soft[0, targets[0]].item() == pytest.approx(1 - area_share, abs=1e-6)


def test_mixers_with_p_zero_only_one_hot_encode():
    images, targets = _batch()
    out, soft = RandomMixup(num_classes=5, p=0.0)(images, targets)
    assert torch.equal(out, images)
    assert torch.equal(soft, torch.nn.functional.one_hot(targets, 5).float())


def test_mixers_validate_inputs_and_parameters():
    images, targets = _batch()
    mixup = RandomMixup(num_classes=5, p=1.0)
    with pytest.raises(InputError, match="B, C, H, W"):
        mixup(images[0], targets)
    with pytest.raises(InputError, match="int64"):
        mixup(images, targets.float())
    with pytest.raises(InputError, match="float"):
        mixup((images * 255).to(torch.uint8), targets)
    with pytest.raises(InputError, match=r"\[0, 4\]"):
        mixup(images, targets + 1)
    with pytest.raises(ConfigError, match="alpha"):
        RandomCutmix(num_classes=5, alpha=0.0)
    with pytest.raises(ConfigError, match="num_classes"):
        RandomMixup(num_classes=0)


def test_split_and_grid_tiles_groups_of_four():
    images, targets = _batch(n=10, size=4)
    out, hot = SplitAndGrid(p_gridified=0.5, num_classes=5)(images, targets)
    # int(10 * 0.5) = 5 -> one grid of 4 images, 6 untouched images
    assert out.shape == (7, 3, 4, 4) and hot.shape == (7, 5)
    assert torch.equal(out[1:], images[4:])
    assert hot[0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    tiled = torch.cat([torch.cat([images[0], images[1]], dim=2), torch.cat([images[2], images[3]], dim=2)], dim=1)
    expected = torch.nn.functional.interpolate(tiled[None], size=(4, 4), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(out[0], expected)


def test_make_train_collate_options():
    assert make_train_collate(5) is None
    assert isinstance(make_train_collate(5, mixup_alpha=0.2).batch_transform, RandomMixup)
    both = make_train_collate(5, mixup_alpha=0.2, cutmix_alpha=1.0)
    assert isinstance(both.batch_transform, RandomBatchChoice)
    assert {type(t) for t in both.batch_transform.transforms} == {RandomMixup, RandomCutmix}
    with pytest.raises(ConfigError, match="p_gridified"):
        make_train_collate(5, mixup_alpha=0.2, p_gridified=0.5)
    with pytest.raises(ConfigError, match="mixup_alpha"):
        make_train_collate(5, mixup_alpha=-1)


def test_collate_then_batches_and_mixes_and_pickles():
    torch.manual_seed(0)
    collate = make_train_collate(5, mixup_alpha=0.2, cutmix_alpha=1.0)
    samples = [(torch.rand(3, 4, 4), i % 5) for i in range(6)]
    images, soft = collate(samples)
    assert images.shape == (6, 3, 4, 4) and soft.shape == (6, 5)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    assert isinstance(pickle.loads(pickle.dumps(collate)), CollateThen)  # DataLoader workers may pickle it


def test_random_batch_choice_uses_both_transforms():
    images, targets = _batch()
    seen = set()

    def first(x, y):
        seen.add("first")
        return x, y

    def second(x, y):
        seen.add("second")
        return x, y

    choice = RandomBatchChoice([first, second])
    torch.manual_seed(0)
    for _ in range(20):
        choice(images, targets)
    assert seen == {"first", "second"}
