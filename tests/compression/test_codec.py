"""The splat codec on random Gaussians (no run needed): exact container round trip, the hard byte budget, the
smallest-budget error, and clear errors on corrupt, truncated and foreign files."""

from __future__ import annotations

import json
import lzma
import struct
import zlib

import numpy as np
import pytest

from difix_ns.compression import (
    BITS_LADDER,
    DEFAULT_BITS,
    CodecOptions,
    check_bits,
    dequantize,
    encode_at,
    encode_best,
    encode_to_budget,
    fake_quantize,
    morton_codes,
    pack,
    prune,
    quantize,
    unpack,
)

META = {"config_yml": "a config\n", "step": 7}


def random_params(n: int, sh_coeffs: int = 15, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "means": rng.normal(0, 3, (n, 3)).astype(np.float32),
        "scales": rng.normal(-3, 1, (n, 3)).astype(np.float32),
        "quats": rng.normal(0, 1, (n, 4)).astype(np.float32),
        "opacities": rng.normal(0, 2, (n, 1)).astype(np.float32),
        "features_dc": rng.normal(0, 1, (n, 3)).astype(np.float32),
        "features_rest": rng.normal(0, 0.1, (n, sh_coeffs, 3)).astype(np.float32),
    }


def assert_same(q, r):
    assert q.codes.keys() == r.codes.keys() and q.ranges.keys() == r.ranges.keys()
    for key in q.codes:
        assert q.codes[key].dtype == r.codes[key].dtype
        np.testing.assert_array_equal(q.codes[key], r.codes[key])
    for key in q.ranges:
        np.testing.assert_array_equal(q.ranges[key], r.ranges[key])
    assert (q.sh_degree, q.sh_coeffs, q.sh_mode, q.sh_bits) == (r.sh_degree, r.sh_coeffs, r.sh_mode, r.sh_bits)


@pytest.mark.parametrize("sh_degree, n, codebook, mode", [(0, 300, 1024, "none"), (2, 300, 1024, "quant"),
                                                          (3, 400, 16, "kmeans")])  # fmt: skip
def test_container_round_trip_is_exact(sh_degree, n, codebook, mode):
    q = quantize(random_params(n), sh_degree, codebook_size=codebook)
    assert q.sh_mode == mode
    q.extra = {"note": "kept"}
    r, metadata = unpack(pack(q, META), "scene.dxs")
    assert_same(q, r)
    assert metadata == META and r.extra == {"note": "kept"}
    decoded, again = dequantize(q), dequantize(r)
    for key in decoded:
        assert decoded[key].dtype == np.float32
        np.testing.assert_array_equal(decoded[key], again[key])
    assert decoded["features_rest"].shape == (n, 15, 3)
    assert not decoded["features_rest"][:, (sh_degree + 1) ** 2 - 1 :].any(), "unstored degrees decode as 0"


def test_dequantized_values_are_close_to_the_originals():
    params = random_params(500)
    decoded = dequantize(quantize(params, 3))
    order = np.lexsort(decoded["means"].T)
    original = {k: v[np.lexsort(params["means"].T)] for k, v in params.items()}  # Morton order differs
    decoded = {k: v[order] for k, v in decoded.items()}
    np.testing.assert_allclose(decoded["means"], original["means"], rtol=2e-4, atol=2e-4)
    span = params["scales"].max(0) - params["scales"].min(0)
    assert (np.abs(decoded["scales"] - original["scales"]) <= span / 255 / 2 + 1e-6).all()
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert np.abs(sigmoid(decoded["opacities"]) - sigmoid(original["opacities"])).max() <= 1 / 512 + 1e-6


def test_gaussians_are_stored_in_morton_order():
    q = quantize(random_params(300), 0)
    codes = morton_codes(q.codes["means"].astype(np.uint64))
    assert (np.diff(codes.astype(np.float64)) >= 0).all()
    assert morton_codes(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])).tolist() == [1, 2, 4, 7]


def test_prune_keeps_the_most_important():
    params = random_params(10)
    importance = np.arange(10.0)[::-1]
    kept = prune(params, importance, 3)
    np.testing.assert_array_equal(kept["means"], params["means"][:3])
    with pytest.raises(ValueError, match="importance must have one value per Gaussian"):
        prune(params, importance[:5], 3)


def test_file_never_exceeds_the_budget():
    params, importance = random_params(1500), np.random.default_rng(1).random(1500)
    options = CodecOptions(sh_degree=1)
    full = len(encode_at(params, importance, 1500, options, META))
    smallest = len(encode_at(params, importance, 1, options, META))
    previous = 0
    for budget in np.linspace(smallest, full * 1.1, 7).astype(int):
        result = encode_to_budget(params, importance, int(budget), options, META)
        assert len(result.data) <= budget
        assert all(size <= budget for count, size in result.tries if count == result.num_gaussians)
        assert result.num_gaussians >= previous * 0.98, "more bytes keep (about) more Gaussians"
        previous = result.num_gaussians
        q, _ = unpack(result.data, "budget.dxs")
        assert q.num_gaussians == result.num_gaussians
    assert previous == 1500


def test_the_secant_search_fits_about_as_many_gaussians_in_fewer_encodings():
    from difix_ns.compression.budget import SECANT_COUNT_TOLERANCE

    params, importance = random_params(3000), np.random.default_rng(2).random(3000)
    options = CodecOptions(sh_degree=1)
    full = len(encode_at(params, importance, 3000, options, META))
    for fraction in (0.1, 0.37, 0.8):
        budget = int(full * fraction)
        fast = encode_to_budget(params, importance, budget, options, META)
        reference = encode_to_budget(params, importance, budget, options, META, secant=False)
        assert len(fast.data) <= budget and len(reference.data) <= budget
        assert len(fast.tries) < len(reference.tries), (fast.tries, reference.tries)
        assert abs(fast.num_gaussians - reference.num_gaussians) <= 2 + SECANT_COUNT_TOLERANCE * reference.num_gaussians


def test_a_budget_below_one_gaussian_names_the_minimum():
    params, importance = random_params(50), np.ones(50)
    smallest = len(encode_at(params, importance, 1, CodecOptions(), META))
    with pytest.raises(ValueError, match=f"smallest file this scene can be stored in: {smallest} bytes"):
        encode_to_budget(params, importance, smallest - 1, CodecOptions(), META)
    assert len(encode_to_budget(params, importance, smallest, CodecOptions(), META).data) == smallest


def _repacked(body: bytes) -> bytes:
    """A file whose body (valid CRC) is `body` compressed as the container does."""
    compressed = lzma.compress(body, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
    return struct.pack("<4sHI", b"DXSP", 1, zlib.crc32(compressed)) + compressed


def test_corrupt_truncated_and_foreign_files_are_rejected_by_name():
    data = pack(quantize(random_params(200), 1), META)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    cases = {
        data[: len(data) // 2]: "checksum mismatch",
        data[:5]: "truncated",
        bytes(flipped): "corrupt",
        b"\x89PNG\r\n\x1a\n" + bytes(100): "not a difix-ns splat file",
        data[:4] + struct.pack("<H", 99) + data[6:]: "format version 99",
        _repacked(b"\x05\x00\x00\x00{bad}"): "header is corrupt",
        _repacked(struct.pack("<I", 2) + b"{}"): "header is corrupt",
    }
    header = (b'{"sh_degree":0,"sh_coeffs":15,"sh_mode":"none","sh_bits":6,"ranges":{},'
              b'"sections":[["means","u2",[2,3]]]}')  # fmt: skip
    cases[_repacked(struct.pack("<I", len(header)) + header + bytes(12))] = "layout is inconsistent"
    for bad, message in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            unpack(bad, "/data/scene.dxs")
        assert "/data/scene.dxs" in str(error.value)


def test_importance_is_each_gaussians_share_of_the_rendered_alpha():
    """Blending weights of all Gaussians add up to the accumulated alpha of all pixels; an occluded Gaussian
    (same footprint, behind an opaque one) gets less than the one in front."""
    import torch

    from difix_ns.compression import blending_importance
    from difix_ns.splat.rasterize import rasterization

    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 4.0], [0.5, 0.3, 5.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 3)
    scales = torch.log(torch.full((3, 3), 0.4))
    opacities = torch.logit(torch.tensor([[0.95], [0.95], [0.5]]))
    viewmats, Ks = torch.eye(4)[None], torch.tensor([[[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]])
    importance = blending_importance(means, quats, scales, opacities, viewmats, Ks, [(32, 32)], volume_power=0)
    _, alpha, _ = rasterization(means, quats, torch.exp(scales), torch.sigmoid(opacities).reshape(3),
                                torch.zeros(3, 1), viewmats, Ks, 32, 32)  # fmt: skip
    assert importance.sum() == pytest.approx(float(alpha.sum()), rel=1e-4)
    assert importance[0] > 3 * importance[1] > 0


@pytest.mark.parametrize("bits", [BITS_LADDER[1], BITS_LADDER[4], BITS_LADDER[-1]])
def test_coarser_bits_round_trip_and_decode_within_half_a_step(bits):
    params = random_params(400)
    params["means"][:, 0] = np.linspace(0.0, 4.0, 400)  # distinct x: decoded Gaussians are matched by it
    q = quantize(params, 0, bits=bits)
    r, _ = unpack(pack(q, META), "coarse.dxs")
    assert_same(q, r)
    assert r.bits == bits
    for key, width in bits.items():
        assert int(q.codes[key].max()) < 2**width, f"{key} codes fit {width} bits"
    decoded = dequantize(r)
    order, original_order = np.argsort(decoded["means"][:, 0]), np.argsort(params["means"][:, 0])
    if bits["means"] >= 11:  # x still tells the Gaussians apart
        decoded = {k: v[order] for k, v in decoded.items()}
        original = {k: v[original_order] for k, v in params.items()}
        span = params["scales"].max(0) - params["scales"].min(0)
        assert (np.abs(decoded["scales"] - original["scales"]) <= span / (2 ** bits["scales"] - 1) / 2 + 1e-5).all()
        sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
        half_bin = 1 / 2 ** (bits["opacities"] + 1)
        assert np.abs(sigmoid(decoded["opacities"]) - sigmoid(original["opacities"])).max() <= half_bin + 1e-6
    assert np.isfinite(np.concatenate([v.reshape(len(v), -1) for v in decoded.values()], 1)).all()


def test_fewer_bits_store_more_gaussians_in_the_same_bytes():
    params, importance = random_params(3000), np.random.default_rng(2).random(3000)
    budget = len(encode_at(params, importance, 1000, CodecOptions(), META))
    coarse = encode_to_budget(params, importance, budget, CodecOptions(bits=BITS_LADDER[5]), META)
    assert len(coarse.data) <= budget and coarse.num_gaussians > 1300 and coarse.bits == BITS_LADDER[5]


def test_bytes_metadata_travels_as_raw_blobs():
    q = quantize(random_params(30), 0)
    blob = bytes(range(256)) * 3
    _, metadata = unpack(pack(q, {**META, "blob": blob, "empty": b""}), "blob.dxs")
    assert metadata == {**META, "blob": blob, "empty": b""}


def test_version_1_files_without_bits_still_decode():
    q = quantize(random_params(100), 1)
    body = lzma.decompress(pack(q, META)[10:], format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    (length,) = struct.unpack_from("<I", body)
    header = json.loads(body[4 : 4 + length])
    assert header.pop("bits") == DEFAULT_BITS
    text = json.dumps(header).encode()
    r, metadata = unpack(_repacked(struct.pack("<I", len(text)) + text + body[4 + length :]), "v1.dxs")
    assert r.bits == DEFAULT_BITS and metadata == META
    assert_same(q, r)


def test_bad_bits_are_refused():
    with pytest.raises(ValueError, match="bits of means must be an integer in 1..16"):
        check_bits({**DEFAULT_BITS, "means": 17})
    with pytest.raises(ValueError, match="bits must give exactly"):
        check_bits({"means": 8})
    q = quantize(random_params(50), 0)
    q.bits = {**DEFAULT_BITS, "scales": 2}  # the header claims fewer bits than the codes hold
    with pytest.raises(ValueError, match="scales holds codes past its 2 bits"):
        unpack(pack(q, META), "lying.dxs")


def test_encode_best_keeps_the_best_scored_allocation_and_stops_after_two_falls():
    params, importance = random_params(2000), np.random.default_rng(3).random(2000)
    budget = len(encode_at(params, importance, 600, CodecOptions(), META))
    preferred = BITS_LADDER[2]

    def peaked(decoded):  # best at the third allocation: recognised by its decoded opacity levels
        levels = len(np.unique(decoded["opacities"]))
        return -abs(levels - 2 ** preferred["opacities"])

    result = encode_best(params, importance, budget, CodecOptions(), META, peaked)
    assert result.bits == preferred and len(result.data) <= budget
    assert [s[0] for s in result.scores] == list(BITS_LADDER[:5]), "two falls after the best, then stop"
    more = encode_best(params, importance, budget, CodecOptions(), META, lambda d: len(d["means"]))
    counts = [count for _, count, _ in more.scores]
    assert len(more.scores) == len(BITS_LADDER) and more.num_gaussians == max(counts)
    assert more.bits == BITS_LADDER[counts.index(max(counts))], "a tie keeps the finer allocation"


def _rows(params) -> np.ndarray:
    """Every decoded attribute of each Gaussian side by side, rows sorted (the codec stores Morton order)."""
    flat = np.concatenate([np.asarray(params[k], np.float64).reshape(len(params["means"]), -1)
                           for k in ("means", "scales", "quats", "opacities", "features_dc")], axis=1)  # fmt: skip
    return flat[np.lexsort(flat.T[::-1])]


@pytest.mark.parametrize("bits", [DEFAULT_BITS, BITS_LADDER[5], BITS_LADDER[-1]])
def test_fake_quantize_is_the_pytorch_twin_of_the_codec(bits):
    import torch

    params = random_params(500, sh_coeffs=8)
    decoded = fake_quantize({k: torch.from_numpy(v) for k, v in params.items()}, bits, sh_degree=1)
    codec = dequantize(quantize(params, sh_degree=1, bits=bits))
    twin = {k: v.numpy() for k, v in decoded.items()}
    # the codec sorts the Gaussians; compare as sets of rows (float32 math may round a value to the next level)
    close = np.isclose(_rows(twin), _rows(codec), rtol=1e-5, atol=1e-5)
    assert close.mean() > 0.999, f"{(~close).sum()} of {close.size} values differ"
    np.testing.assert_allclose(decoded["features_rest"][:, 3:].numpy(), 0)
    np.testing.assert_allclose(decoded["features_rest"][:, :3].numpy(), params["features_rest"][:, :3])


def test_fake_quantize_passes_gradients_straight_through_the_rounding():
    import torch

    params = {k: torch.from_numpy(v).requires_grad_() for k, v in random_params(200).items()}
    decoded = fake_quantize(params, BITS_LADDER[-1])
    sum(v.sum() for v in decoded.values()).backward()
    for key in ("scales", "features_dc", "features_rest"):  # no transform around the rounding: identity
        torch.testing.assert_close(params[key].grad, torch.ones_like(params[key]))
    for key in ("means", "quats", "opacities"):  # exact derivatives of the transforms around it: finite, not 0
        assert torch.isfinite(params[key].grad).all() and params[key].grad.abs().sum() > 0
