"""Difix3D+ post-processing: lazy fixer, rgb_fixed and *_fixed metrics, the viewer toggle and its lock."""

from __future__ import annotations

import threading
import types

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.viewer.render_state_machine import RenderStateMachine
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerDropdown, ViewerElement, ViewerNumber

from difix_ns.fixers.config import FixerConfig
from difix_ns.models.difix_splatfacto import DifixSplatfactoModelConfig


@pytest.fixture
def model_with_nafnet(trained_splatfacto):
    """The trained model with a small untrained NAFNet as fixer (it visibly changes images), restored after."""
    model = trained_splatfacto["trainer"].pipeline.model
    previous = model.fixing.fixer
    model.set_fixer(
        FixerConfig(backend="nafnet", nafnet_width=8, nafnet_use_reference=True, random_init=True, device="cpu").setup()
    )
    model.viewer_postprocess.value = True
    model.eval()
    yield model
    model.set_fixer(previous)
    model.viewer_postprocess.value = model.config.postprocess


def _camera(trained_splatfacto, index: int = 0):
    return trained_splatfacto["trainer"].pipeline.datamanager.eval_dataset.cameras[index : index + 1]


def test_model_construction_does_not_build_the_fixer(offline):
    config = DifixSplatfactoModelConfig(num_random=50, fixer=FixerConfig(backend="difix", checkpoint="nowhere/at-all"))
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=box, num_train_data=2, metadata={})
    assert model.fixing.fixer is None, "the fixer is built at first use, not with the model"
    assert not any("fixer" in key for key in model.state_dict()), "fixer weights are not part of the scene"


def test_viewer_elements_exist_on_the_model(trained_splatfacto):
    pipeline = trained_splatfacto["trainer"].pipeline
    found = {e.name: e for _, e in parse_object(pipeline, ViewerElement, "Custom Elements")}
    assert isinstance(found["Difix post-processing"], ViewerCheckbox)
    assert isinstance(found["Fixer reference"], ViewerDropdown)
    assert found["Fixer reference"].options == ["nearest", "none"]
    assert isinstance(found["Fixer latency (ms)"], ViewerNumber)


def test_toggling_post_processing_changes_the_rendered_output(model_with_nafnet, trained_splatfacto):
    model, camera = model_with_nafnet, _camera(trained_splatfacto)
    model.viewer_postprocess.value = False
    off = model.get_outputs_for_camera(camera)
    assert "rgb_fixed" not in off
    model.viewer_postprocess.value = True
    on = model.get_outputs_for_camera(camera)
    torch.testing.assert_close(on["rgb"], off["rgb"])  # outside the viewer rgb stays the raw render
    assert on["rgb_fixed"].shape == off["rgb"].shape
    assert (on["rgb_fixed"] - off["rgb"]).abs().max() > 1e-3
    assert model.viewer_fixer_latency.value > 0.0


def test_in_the_viewer_the_displayed_rgb_is_fixed_and_the_lock_is_released(model_with_nafnet, trained_splatfacto):
    model, camera = model_with_nafnet, _camera(trained_splatfacto)
    lock = threading.Lock()
    fixer = model.fixing.fixer
    seen_locked = []
    inner_fix = fixer.fix

    def fix(images, refs=None, warped=None):
        seen_locked.append(lock.locked())
        return inner_fix(images, refs)

    fixer.fix = fix

    class FakeRenderThread(RenderStateMachine):  # what the viewer renders in; only its lock matters here
        def __init__(self):
            threading.Thread.__init__(self, daemon=True)
            self.viewer = types.SimpleNamespace(train_lock=lock)
            self.result = None

        def run(self):
            with lock:  # the viewer renders holding the training lock
                self.result = model.get_outputs_for_camera(camera)
                self.locked_after = lock.locked()

    try:
        thread = FakeRenderThread()
        thread.start()
        thread.join(60)
    finally:
        del fixer.fix
    outputs = thread.result
    assert seen_locked == [False], "the fixer must run with the training lock released"
    assert thread.locked_after, "the lock is taken back before returning to the viewer"
    torch.testing.assert_close(outputs["rgb"], outputs["rgb_fixed"])
    assert (outputs["rgb"] - outputs["rgb_raw"]).abs().max() > 1e-3


def test_reference_mode_uses_the_nearest_training_view(model_with_nafnet, trained_splatfacto):
    model, camera = model_with_nafnet, _camera(trained_splatfacto, 3)
    calls = []
    inner = model.fixing.training_views.references

    def references(indices, size):
        calls.append(indices.tolist())
        return inner(indices, size)

    model.fixing.training_views.references = references
    try:
        model.get_outputs_for_camera(camera)
        model.viewer_reference.value = "none"
        model.get_outputs_for_camera(camera)
    finally:
        model.viewer_reference.value = "nearest"
        del model.fixing.training_views.references
    expected = model.fixing.training_views.nearest(camera.camera_to_worlds, 1).tolist()
    assert calls == [expected], "one lookup in 'nearest' mode, none in 'none' mode"


def test_metrics_are_reported_raw_and_fixed(model_with_nafnet, trained_splatfacto):
    model = model_with_nafnet
    camera, batch = trained_splatfacto["trainer"].pipeline.datamanager.fixed_indices_eval_dataloader[0]
    outputs = model.get_outputs_for_camera(camera)
    metrics, images = model.get_image_metrics_and_images(outputs, batch)
    assert {"psnr", "ssim", "psnr_fixed", "ssim_fixed"} <= set(metrics)
    assert metrics["psnr"] != metrics["psnr_fixed"]
    assert "img_fixed" in images


def test_post_processing_gives_a_warping_fixer_the_nearest_training_views_warped_by_depth(trained_splatfacto):
    """A fixer that takes warped references gets the model's `warped_references` for the render (the 2 nearest
    training photos warped by the render's z-depth, occlusion-tested against their own rendered depth); with the
    reference mode "none" it gets none."""
    from difix_ns.fixers.testing import RecordingFixer

    model = trained_splatfacto["trainer"].pipeline.model
    previous, recorder = model.fixing.fixer, RecordingFixer()
    model.set_fixer(recorder)
    model.eval()
    try:
        camera = _camera(trained_splatfacto)
        outputs = model.get_outputs_for_camera(camera, postprocess=True)
        expected = model.warped_references(camera, model.render_z_depth(outputs, camera), 2)
        seen = recorder.seen[-1]
        assert seen.rgb.shape == (1, 2, 3, *outputs["rgb"].shape[:2])
        torch.testing.assert_close(seen.mask, expected.mask)
        torch.testing.assert_close(seen.rgb, expected.rgb)
        assert seen.mask.mean() > 0.1, "nearby training views see part of an evaluation view"
        model.fix_render(outputs["rgb"], camera, reference="none", depth=model.render_z_depth(outputs, camera))
        assert recorder.seen[-1].mask.sum() == 0  # "none": no references of any kind
    finally:
        model.set_fixer(previous)


def test_distance_blend_keeps_renders_at_training_poses_and_fixes_far_ones(model_with_nafnet, trained_splatfacto):
    """postprocess_blend distance (the default): raw render at a training pose, the fixer's output from one
    training-camera spacing away, in between a mix by the distance."""
    from difix_ns.progressive.poses import camera_spacing, nearest_views

    model = model_with_nafnet
    assert model.config.postprocess_blend == "distance"
    train_camera = trained_splatfacto["trainer"].pipeline.datamanager.train_dataset.cameras[0:1]
    outputs = model.get_outputs_for_camera(train_camera, postprocess=True)
    torch.testing.assert_close(outputs["rgb_fixed"], outputs["rgb"])  # distance 0: nothing to fix
    camera = _camera(trained_splatfacto)
    views = model.fixing.training_views
    distance = float(nearest_views(camera.camera_to_worlds[:, :3, :4].float(), views.poses, 1)[1][0, 0])
    weight = min(1.0, distance / camera_spacing(views.poses))
    assert 0.0 < weight
    outputs = model.get_outputs_for_camera(camera, postprocess=True)
    model.config.postprocess_blend = "none"
    try:
        unblended = model.get_outputs_for_camera(camera, postprocess=True)["rgb_fixed"]
    finally:
        model.config.postprocess_blend = "distance"
    expected = outputs["rgb"] + weight * (unblended - outputs["rgb"])
    torch.testing.assert_close(outputs["rgb_fixed"], expected)
    model.config.postprocess_strength = 0.5  # scales the change after the blend
    try:
        halved = model.get_outputs_for_camera(camera, postprocess=True)["rgb_fixed"]
    finally:
        model.config.postprocess_strength = 1.0
    torch.testing.assert_close(halved, outputs["rgb"] + 0.5 * weight * (unblended - outputs["rgb"]))
