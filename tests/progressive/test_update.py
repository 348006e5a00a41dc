"""One progressive update with stand-in render and fixer: count, size, references, masks, state round trip."""

from __future__ import annotations

import io
import math

import pytest
import torch

from difix_ns.progressive import ProgressiveConfig, ProgressiveState, TrainingViews, progressive_update
from difix_ns.progressive.poses import pose_distances
from difix_ns.progressive.targets import make_cameras


def _orbit(angles_deg, radius=2.0) -> torch.Tensor:
    poses = []
    for a in angles_deg:
        t = math.radians(a)
        rot = torch.tensor([[math.cos(t), 0.0, math.sin(t)], [0.0, 1.0, 0.0], [-math.sin(t), 0.0, math.cos(t)]])
        poses.append(torch.cat([rot, rot[:, 2:3] * radius], dim=1))
    return torch.stack(poses)


def _cameras(poses: torch.Tensor, size: int) -> object:
    n = poses.shape[0]
    ones = torch.ones(n, 1)
    return make_cameras(poses, 40 * ones, 40 * ones, size / 2 * ones, size / 2 * ones, size * ones, size * ones)


def _training() -> TrainingViews:
    poses = _orbit([0, 20, 40, 60])
    images = [torch.full((16, 16, 3), 40 * (i + 1), dtype=torch.uint8) for i in range(4)]
    return TrainingViews(poses, lambda i: images[i], [f"train_{i}.png" for i in range(4)])


class _Recorder:
    """Stand-in render (alpha 1 on the left half) and fixer (records its references, adds 0.1)."""

    def __init__(self):
        self.rendered = 0
        self.refs = []

    def render(self, camera):
        self.rendered += 1
        h, w = int(camera.height[0]), int(camera.width[0])
        alpha = torch.zeros(h, w, 1)
        alpha[:, : w // 2] = 1.0
        return torch.full((h, w, 3), 0.5), alpha, None

    def fix(self, images, refs, warped=None):
        self.refs.append(refs)
        return (images + 0.1).clamp(0, 1)


def test_update_makes_one_pseudo_view_per_target_with_the_nearest_reference():
    training, rec = _training(), _Recorder()
    targets = _cameras(_orbit([100, 130, -50]), size=24)
    config = ProgressiveConfig(render_chunk_size=2)
    state = progressive_update(ProgressiveState(), config, 1500, targets, training, rec.render, rec.fix)
    views = state.pseudo
    assert len(views) == 3 and rec.rendered == 3
    assert len(rec.refs) == 2, "rendered and fixed in chunks of render_chunk_size"
    assert all(tuple(im.shape) == (24, 24, 3) and im.dtype == torch.uint8 for im in views.images)
    assert int(views.images[0][0, 0, 0]) == round(0.6 * 255)
    assert views.masks[0][:, :12].all() and not views.masks[0][:, 12:].any()
    # references: the training views nearest to each new pose (brute force)
    expected = pose_distances(views.cameras.camera_to_worlds, training.poses).argmin(dim=1)
    assert views.reference_indices.tolist() == expected.tolist()
    refs = torch.cat(rec.refs)
    assert refs.shape == (3, 1, 3, 24, 24)
    torch.testing.assert_close(refs[:, 0, 0, 0, 0], (expected + 1).float() * 40 / 255)
    assert views.steps.tolist() == [1500] * 3
    assert state.num_updates == 1 and state.last_update_step == 1500


def test_first_update_starts_from_the_nearest_training_pose_and_steps_toward_the_target():
    training = _training()
    targets = _cameras(_orbit([120]), size=8)
    config = ProgressiveConfig(step_size=0.3)
    state = progressive_update(ProgressiveState(), config, 0, targets, training, _Recorder().render, _Recorder().fix)
    start = training.poses[3:4]  # 60 degrees: the nearest training pose to 120
    moved = pose_distances(start, state.poses).item()
    assert moved == pytest.approx(0.3, abs=1e-4)
    before = pose_distances(start, targets.camera_to_worlds).item()
    after = pose_distances(state.poses, targets.camera_to_worlds).item()
    assert after == pytest.approx(before - 0.3, abs=1e-4)


def test_the_default_step_is_a_number_of_training_camera_spacings():
    from difix_ns.progressive.poses import camera_spacing
    from difix_ns.progressive.update import default_step_size

    training = _training()
    spacing = camera_spacing(training.poses)
    assert default_step_size(ProgressiveConfig(), training) == pytest.approx(spacing)
    assert default_step_size(ProgressiveConfig(step_spacings=2.5), training) == pytest.approx(2.5 * spacing)
    assert default_step_size(ProgressiveConfig(step_size=0.3, step_spacings=2.5), training) == 0.3
    targets = _cameras(_orbit([170]), size=8)
    state = progressive_update(
        ProgressiveState(), ProgressiveConfig(step_spacings=2.0), 0, targets, training, _Recorder().render,
        _Recorder().fix,
    )  # fmt: skip
    assert pose_distances(training.poses[3:4], state.poses).item() == pytest.approx(2.0 * spacing, abs=1e-4)
    with pytest.raises(ValueError, match="step_spacings must be > 0"):
        ProgressiveConfig(step_spacings=0.0).validate()


def test_replace_by_default_and_accumulate_as_an_option():
    training, rec = _training(), _Recorder()
    targets = _cameras(_orbit([100, 130]), size=8)
    state = ProgressiveState()
    for step in (10, 20):
        state = progressive_update(state, ProgressiveConfig(), step, targets, training, rec.render, rec.fix)
    assert len(state.pseudo) == 2 and state.pseudo.steps.tolist() == [20, 20]
    state = ProgressiveState()
    for step in (10, 20):
        state = progressive_update(
            state, ProgressiveConfig(accumulate=True), step, targets, training, rec.render, rec.fix
        )
    assert len(state.pseudo) == 4 and state.pseudo.steps.tolist() == [10, 10, 20, 20]


def test_state_round_trips_through_a_weights_only_checkpoint():
    training, rec = _training(), _Recorder()
    state = progressive_update(
        ProgressiveState(), ProgressiveConfig(), 7, _cameras(_orbit([100, 130]), 8), training, rec.render, rec.fix
    )
    buffer = io.BytesIO()
    torch.save({"progressive": state.to_state()}, buffer)
    buffer.seek(0)
    loaded = ProgressiveState.from_state(torch.load(buffer, weights_only=True)["progressive"])
    assert loaded.num_updates == 1 and loaded.last_update_step == 7 and loaded.history == state.history
    torch.testing.assert_close(loaded.poses, state.poses)
    torch.testing.assert_close(loaded.pseudo.cameras.camera_to_worlds, state.pseudo.cameras.camera_to_worlds)
    assert all(torch.equal(a, b) for a, b in zip(loaded.pseudo.images, state.pseudo.images))
    assert all(torch.equal(a, b) for a, b in zip(loaded.pseudo.masks, state.pseudo.masks))


def test_changed_targets_on_resume_get_a_clear_error():
    training, rec = _training(), _Recorder()
    state = progressive_update(
        ProgressiveState(), ProgressiveConfig(), 7, _cameras(_orbit([100, 130]), 8), training, rec.render, rec.fix
    )
    with pytest.raises(ValueError, match="saved schedule has 2 novel cameras"):
        progressive_update(state, ProgressiveConfig(), 8, _cameras(_orbit([100]), 8), training, rec.render, rec.fix)


def test_schedule_steps():
    config = ProgressiveConfig(fix_start=3, fix_every=4)
    assert [s for s in range(16) if config.is_update_step(s)] == [3, 7, 11, 15]
    assert not ProgressiveConfig(enabled=False, fix_start=0).is_update_step(0)
    with pytest.raises(ValueError, match="camera_path"):
        ProgressiveConfig(targets="path").validate()


def test_updates_left_counts_the_update_steps_to_the_last_step():
    config = ProgressiveConfig(fix_start=250, fix_every=250)
    for step in (0, 249, 250, 251, 500, 750, 999, 1000):
        brute = sum(config.is_update_step(s) for s in range(step, 1000))
        assert config.updates_left(step, 999) == brute, step
    assert ProgressiveConfig(enabled=False).updates_left(0, 10_000) == 0


def test_reach_targets_brings_every_camera_to_its_target_by_the_last_update():
    """Fixed step: a target far from every training view is never reached in the run's updates; with
    `reach_targets` each camera takes remaining distance / updates left (never less than the fixed step), so it
    arrives at the last update, having moved by equal steps."""
    training = _training()
    targets = _cameras(_orbit([150, 70]), size=8)  # 90 and 10 degrees beyond the last training view
    steps = [250, 500, 750]
    for reach in (False, True):
        config = ProgressiveConfig(fix_start=250, fix_every=250, step_size=0.2, reach_targets=reach)
        state, moved = ProgressiveState(), []
        for step in steps:
            before = state.poses
            state = progressive_update(
                state, config, step, targets, training, _Recorder().render, _Recorder().fix, last_step=999
            )
            if before is not None:
                moved.append(pose_distances(before, state.poses).diagonal())
        remaining = pose_distances(state.poses, targets.camera_to_worlds).diagonal()
        if not reach:
            assert remaining[0].item() > 1.0, "the fixed step leaves the far camera short of its target"
            continue
        torch.testing.assert_close(remaining, torch.zeros(2), atol=1e-3, rtol=0)
        start = pose_distances(training.poses[3:4], targets.camera_to_worlds[:1]).item()
        assert moved[0][0].item() == pytest.approx(start / 3, rel=1e-3)  # equal thirds of the way
        # the near camera (about 0.52 away: a third is under the fixed step) keeps the fixed step
        assert moved[0][1].item() == pytest.approx(0.2, abs=1e-4)
    # without the run's last step the option cannot size the steps: the fixed step is used
    config = ProgressiveConfig(step_size=0.2, reach_targets=True)
    state = progressive_update(ProgressiveState(), config, 0, targets, training, _Recorder().render, _Recorder().fix)
    assert pose_distances(training.poses[3:4], state.poses[:1]).item() == pytest.approx(0.2, abs=1e-4)


def test_warped_references_reach_the_fixer_when_depth_is_known():
    """With intrinsics and a depth source, the fixer gets the K nearest training views warped into each novel
    camera by the render's depth (the same numbers as `warp_references`); without depth it gets none."""
    from difix_ns.geometry.warp import warp_references

    poses = _orbit([0, 20, 40, 60])
    images = [torch.rand(16, 16, 3) for _ in range(4)]
    intrinsics = torch.tensor([[40.0, 0, 8], [0, 40.0, 8], [0, 0, 1]]).expand(4, 3, 3)
    training = TrainingViews(poses, lambda i: images[i], [f"t{i}.png" for i in range(4)], intrinsics=intrinsics)
    seen = []

    def render(camera):
        return torch.full((16, 16, 3), 0.5), torch.ones(16, 16, 1), torch.full((16, 16), 2.0)

    def fix(batch, refs, warped=None):
        seen.append(warped)
        return batch

    targets = _cameras(_orbit([10, 50]), size=16)
    progressive_update(ProgressiveState(), ProgressiveConfig(), 0, targets, training, render, fix, warped_count=2)
    assert seen[-1] is None  # no depth source yet
    training.set_depth_source(lambda i: torch.full((16, 16), 2.0))
    state = progressive_update(
        ProgressiveState(), ProgressiveConfig(), 0, targets, training, render, fix, warped_count=2
    )
    warped = seen[-1]
    assert warped.rgb.shape == (2, 2, 3, 16, 16) and warped.mask.shape == (2, 2, 1, 16, 16)
    c2w = state.pseudo.cameras.camera_to_worlds
    nearest = training.nearest(c2w, 2)
    for b in range(2):
        row = nearest[b].tolist()
        rgb, valid, _ = warp_references(
            torch.stack([images[i].permute(2, 0, 1) for i in row]), torch.full((2, 16, 16), 2.0), poses[row],
            intrinsics[row], torch.full((16, 16), 2.0), c2w[b], intrinsics[0],
        )
        torch.testing.assert_close(warped.rgb[b], rgb)
        torch.testing.assert_close(warped.mask[b], valid.float())
    assert warped.mask.sum() > 0
