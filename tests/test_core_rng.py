"""Keyed generators: the demo's and the corruption's clip streams, pinned to the draws they gave
before the one derivation (:func:`mer.core.rng.keyed_rng`) served both."""
import numpy as np

from mer.core.rng import keyed_rng
from mer.data.corrupt import clip_rng as corrupt_rng
from mer.demo import clip_rng as demo_rng


def _draws(rng: np.random.Generator) -> list[int]:
    return rng.integers(0, 2**32, 3).tolist()


def test_clip_streams_are_the_pinned_ones():
    # changing these changes every demo corpus (DEMO_VERSION) and every corrupted copy
    assert _draws(corrupt_rng(0, "sample_00000001", "levels")) == [1667716939, 1386751232, 3145905896]
    assert _draws(corrupt_rng(7, "samplenew_00000003", "noise")) == [2204652487, 2057208390, 2103131276]
    assert _draws(demo_rng(0, "sample_00000001", "plan")) == [1103006766, 3003212618, 334803815]
    assert _draws(demo_rng(3, "train", "labels")) == [1174655974, 2663077382, 318969378]


def test_streams_depend_on_keys_not_on_call_order():
    first = _draws(keyed_rng(5, "a", "plan"))
    _draws(keyed_rng(5, "b", "plan"))
    assert _draws(keyed_rng(5, "a", "plan")) == first
    assert _draws(keyed_rng(5, "a", "media")) != first
    assert _draws(keyed_rng(6, "a", "plan")) != first
    assert _draws(corrupt_rng(5, "a", "plan")) == _draws(keyed_rng(5, "corrupt", "a", "plan")) != first
