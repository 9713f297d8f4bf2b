"""The lite diarizer's clustering and re-segmentation (lexia.engines.clustering): plain numpy, so
these run in the default suite on synthetic embeddings with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from lexia.engines.clustering import Bounds, Resegmenter, Window, cluster, kmeans, merge_close, unit

DIM = 64


def voices(counts: list[int], *, spread: float = 0.35, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings scattered around one random direction per speaker, and the true labels."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((len(counts), DIM)))
    rows, labels = [], []
    for speaker, count in enumerate(counts):
        rows.append(unit(centres[speaker] + spread * rng.standard_normal((count, DIM)) / np.sqrt(DIM) * 3))
        labels += [speaker] * count
    return np.vstack(rows), np.array(labels)


def same_partition(found: np.ndarray, truth: np.ndarray) -> bool:
    pairs = {(int(a), int(b)) for a, b in zip(found, truth, strict=True)}
    return len(pairs) == len(set(found.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize("counts", [[40, 40], [30, 25, 35], [20, 30, 25, 15], [30, 10, 30, 25, 20]])
def test_the_speaker_count_comes_from_the_eigengap(counts: list[int]) -> None:
    x, truth = voices(counts)
    found = cluster(x, Bounds())
    assert found.labels.max() + 1 == len(counts)
    assert same_partition(found.labels, truth)
    assert 0.0 <= found.confidence <= 1.0 and found.confidence > 0.3
    assert found.centroids.shape == (len(counts), DIM)
    assert np.allclose(np.linalg.norm(found.centroids, axis=1), 1.0)


def test_one_voice_is_one_speaker() -> None:
    x, _ = voices([80], spread=0.35)
    assert cluster(x, Bounds()).labels.max() == 0


def test_an_exact_count_is_used_as_given_with_full_confidence() -> None:
    x, _ = voices([30, 30, 30])
    for k in (1, 2, 4):
        found = cluster(x, Bounds(exact=k))
        assert found.labels.max() + 1 == k and found.confidence == 1.0


def test_the_count_stays_inside_the_bounds() -> None:
    x, _ = voices([25, 25, 25, 25])
    assert cluster(x, Bounds(maximum=2)).labels.max() + 1 <= 2
    x, _ = voices([60])
    assert cluster(x, Bounds(minimum=2)).labels.max() + 1 >= 2


def test_too_few_windows_are_one_speaker_and_nothing_is_nothing() -> None:
    x, _ = voices([2])
    assert cluster(x, Bounds()).labels.tolist() == [0, 0]
    assert len(cluster(np.zeros((0, DIM)), Bounds()).labels) == 0


def test_clustering_is_deterministic() -> None:
    x, _ = voices([30, 25, 20], spread=0.6)
    first, second = cluster(x, Bounds()), cluster(x, Bounds())
    assert first.labels.tolist() == second.labels.tolist() and first.confidence == second.confidence


def test_kmeans_separates_blobs_and_merge_close_joins_a_split_voice() -> None:
    x, truth = voices([20, 20])
    assert same_partition(kmeans(x, 2), truth)
    split = np.where(np.arange(len(truth)) % 2 == 0, truth, truth + 2)  # each voice cut in two
    assert same_partition(merge_close(x, split, 0.8), truth)
    assert merge_close(x, split, 0.8, minimum=3).max() + 1 == 3


def test_viterbi_places_the_change_where_the_voice_changes_despite_noise() -> None:
    rng = np.random.default_rng(1)
    frames = 100
    posteriors = np.where(np.arange(frames)[:, None] < 37, [0.8, 0.2], [0.2, 0.8])
    noisy = posteriors.copy()
    flips = rng.choice(frames, 8, replace=False)
    noisy[flips] = noisy[flips][:, ::-1]  # isolated wrong frames
    path = Resegmenter().viterbi(noisy)
    assert path[:37].tolist() == [0] * 37 and path[37:].tolist() == [1] * 63


def test_frame_scores_weigh_windows_by_how_close_their_centre_is() -> None:
    reseg = Resegmenter()
    windows = [Window(0, 10), Window(5, 15)]
    similarity = np.array([[0.9, 0.1], [0.1, 0.9]])
    scores = reseg.scores(windows, similarity, 20)
    assert scores[1, 0] > 0.85 and scores[13, 1] > 0.85  # only one window covers these
    assert np.isnan(scores[17]).all()  # no window: unknown
    assert scores[6, 0] > scores[6, 1] and scores[9, 1] > scores[9, 0]  # nearer centre wins


def test_overlap_is_marked_only_between_distinct_voices_and_for_long_enough() -> None:
    reseg = Resegmenter(overlap_threshold=0.2, overlap_frames=3)
    posteriors = np.tile([0.9, 0.1], (12, 1))
    posteriors[4:8] = [0.6, 0.4]  # 4 frames where the second voice is strong
    posteriors[10] = [0.6, 0.4]  # one frame is not enough
    path = np.zeros(12, dtype=np.int64)
    distinct = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]])  # centroids 60 degrees apart
    assert reseg.overlaps(posteriors, path, distinct).tolist() == [-1] * 4 + [1] * 4 + [-1] * 4
    close = np.array([[1.0, 0.0], [0.9, np.sqrt(0.19)]])
    assert reseg.overlaps(posteriors, path, close).tolist() == [-1] * 12


def test_lite_turns_follow_the_frames_join_short_pauses_and_drop_slivers() -> None:
    from lexia.engines.lite import LiteConfig, Region, _runs, _tidy

    region = Region(first=10, last=20, start=1.03, end=1.97)  # frames 1.0-2.0 s, speech 1.03-1.97 s
    path = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    def rounded(runs: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
        return [(s, round(a, 6), round(b, 6)) for s, a, b in runs]

    assert rounded(_runs(path, region)) == [(0, 1.03, 1.3), (1, 1.3, 1.7), (0, 1.7, 1.97)]
    assert rounded(_runs(np.array([-1] * 4 + [1] * 6), region, skip=-1)) == [(1, 1.4, 1.97)]
    turns = _tidy([(0, 0.0, 1.0), (0, 1.2, 2.0), (1, 2.5, 2.6), (1, 3.0, 4.5), (0, 4.0, 9.0)], LiteConfig(), 5.0)
    assert [(t.speaker, t.start, t.end) for t in turns] == [
        ("SPEAKER_00", 0.0, 2.0),  # joined across a 0.2 s pause
        ("SPEAKER_01", 3.0, 4.5),  # the 0.1 s sliver is gone
        ("SPEAKER_00", 4.0, 5.0),  # overlapping the other voice, clamped to the audio
    ]
