"""Speaker clustering and re-segmentation for the lite diarizer, in plain numpy.

Given one speaker embedding per sliding window of speech, `cluster` finds how many speakers there
are and who spoke in each window; `resegment` then places turn boundaries on a 0.1 s frame grid.

- **Clustering** is spectral clustering with the speaker count read off the eigengap of a pruned
  affinity graph, with the pruning chosen automatically (Park et al., "Auto-tuning spectral
  clustering for speaker diarization using normalized maximum eigengap", 2019): for several
  pruning levels p, keep each window's p most similar neighbours, symmetrise, and take the
  Laplacian's largest normalised eigengap g_p among the first `max_k`; the level with the smallest
  p / g_p wins and its eigengap gives the count. The eigengap always separates at least two
  groups, so when it is weak (confidence below WEAK_GAP) the best two-way split is checked first:
  halves as alike as `merge_threshold` are one voice. Clusters whose centroids stay closer than
  `merge_threshold` are merged afterwards. The count's confidence is how much the chosen gap
  stands out from the next-largest one (1 = unambiguous, 0 = a tie).
- **Re-segmentation** scores every frame against each speaker centroid (a triangular-weighted
  mean of the cosine similarities of the windows that cover it), turns the scores into
  posteriors, and runs a Viterbi pass per speech region with a speaker-change penalty, so turns
  end where the voice changes rather than on the window grid. Where the second speaker's
  posterior stays high for a while, the frames count as overlapped speech for both.

Everything is deterministic for a given input (k-means++ with a fixed seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
WEAK_GAP = 0.6  # a count confidence below this is checked for one voice split in several
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Clusters:
    """Window labels (0..count-1), the unit-norm centroid of each speaker and the count's confidence."""

    labels: Ints
    centroids: Floats
    confidence: float


@dataclass(frozen=True, slots=True)
class Bounds:
    """Speaker-count bounds: `exact` wins over min/max."""

    exact: int | None = None
    minimum: int = 1
    maximum: int = 10

    def clamp(self, count: int) -> int:
        """A count inside the bounds."""
        if self.exact:
            return self.exact
        return max(self.minimum, min(self.maximum, count))


def unit(rows: npt.ArrayLike) -> Floats:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float64)


def kmeans(x: Floats, k: int, *, seed: int = 0, iterations: int = 50, restarts: int = 8) -> Ints:
    """k-means++ (best of `restarts` runs by inertia) on the rows of x."""
    rng = np.random.default_rng(seed)
    best: tuple[float, Ints] | None = None
    for _ in range(restarts):
        centres = _kmeans_pp(x, k, rng)
        labels = np.zeros(len(x), dtype=np.int64)
        for _ in range(iterations):
            distances = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
            new = distances.argmin(1).astype(np.int64)
            if _ and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = x[labels == j]
                centres[j] = members.mean(0) if len(members) else x[rng.integers(len(x))]
        inertia = float(((x - centres[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels.copy())
    assert best is not None
    return best[1]


def _kmeans_pp(x: Floats, k: int, rng: np.random.Generator) -> Floats:
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
        total = float(d2.sum())
        pick = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
    return np.array(centres, dtype=np.float64)


def _laplacian_spectrum(affinity: Floats, p: int) -> tuple[Floats, Floats]:
    """Eigenvalues (ascending) and eigenvectors of the Laplacian of the p-pruned, binarised graph."""
    n = len(affinity)
    order = np.argsort(-affinity, axis=1)[:, :p]
    binary = np.zeros_like(affinity)
    binary[np.arange(n)[:, None], order] = 1.0
    graph = 0.5 * (binary + binary.T)
    laplacian = np.diag(graph.sum(1)) - graph
    values, vectors = np.linalg.eigh(laplacian)
    return values, vectors


def _pruning_levels(n: int) -> list[int]:
    top = max(2, n // 4)
    levels = sorted({max(2, round(n * r)) for r in np.linspace(0.01, 0.25, 14)} | {2})
    return [p for p in levels if p <= top] or [min(2, n - 1)]


def _eigengap_count(values: Floats, low: int, high: int) -> tuple[int, float, float]:
    """The count in [low, high] with the largest eigengap, that gap (normalised) and the runner-up's."""
    gaps = np.diff(values[: high + 1]) / max(float(values[-1]), 1e-12)
    candidates = np.arange(1, len(gaps) + 1)  # gaps[i] separates i+1 clusters from i+2
    allowed = (candidates >= low) & (candidates <= high)
    scored = np.where(allowed, gaps, -np.inf)
    k = int(candidates[int(np.argmax(scored))])
    ranked = np.sort(gaps[allowed])[::-1]
    return k, float(ranked[0]), float(ranked[1]) if len(ranked) > 1 else 0.0


def cluster(embeddings: npt.ArrayLike, bounds: Bounds, *, merge_threshold: float = 0.8, seed: int = 0) -> Clusters:
    """Speaker labels for unit-norm window embeddings (rows), within the count bounds."""
    x = unit(embeddings)
    n = len(x)
    if n == 0:
        return Clusters(np.zeros(0, dtype=np.int64), np.zeros((0, x.shape[-1] if x.ndim == 2 else 0)), 0.0)
    if n < 3 or bounds.clamp(1) == bounds.clamp(n) == 1 or bounds.exact == 1:
        return _finish(x, np.zeros(n, dtype=np.int64), 1.0 if n >= 3 or bounds.exact else 0.0)
    affinity = np.clip(x @ x.T, -1.0, 1.0)
    high = min(bounds.exact or bounds.maximum, n - 1)
    low = min(max(2, bounds.exact or bounds.minimum), high)
    best: tuple[float, int, float, Floats] | None = None
    for p in _pruning_levels(n):
        values, vectors = _laplacian_spectrum(affinity, p)
        k, gap, runner_up = _eigengap_count(values, low, high)
        ratio = p / max(gap, 1e-12)
        if best is None or ratio < best[0]:
            confidence = 1.0 - runner_up / gap if gap > 0 else 0.0
            best = (ratio, k, confidence, vectors)
    assert best is not None
    _, k, confidence, vectors = best
    weak = not bounds.exact and bounds.minimum <= 1 and confidence < WEAK_GAP
    if weak and _one_voice(x, vectors, merge_threshold, seed):
        return _finish(x, np.zeros(n, dtype=np.int64), round(max(0.0, confidence), 2))
    k = bounds.exact or k
    labels = kmeans(unit(vectors[:, :k]), k, seed=seed)
    if not bounds.exact:
        labels = merge_close(x, labels, merge_threshold, minimum=max(1, bounds.minimum))
    return _finish(x, labels, 1.0 if bounds.exact else round(max(0.0, min(1.0, confidence)), 2))


def _one_voice(x: Floats, vectors: Floats, threshold: float, seed: int) -> bool:
    """One speaker, not several: the graph's best two-way split leaves halves as alike as one voice's
    (centroid similarity at or above `threshold`). Asked only when the eigengap is weak: the
    eigengap always separates at least two groups, and one voice's windows give it no clear gap."""
    halves = kmeans(unit(vectors[:, :2]), 2, seed=seed)
    if halves.min() == halves.max():
        return True
    centroids = unit(np.array([x[halves == j].mean(0) for j in (0, 1)]))
    return float(centroids[0] @ centroids[1]) >= threshold


def merge_close(x: Floats, labels: Ints, threshold: float, *, minimum: int = 1) -> Ints:
    """Merge the two clusters with the most similar centroids while that similarity is above the
    threshold and more than `minimum` clusters are left; labels renumbered 0..k-1."""
    labels = _renumber(labels)
    while labels.max() + 1 > minimum:
        centroids = unit(np.array([x[labels == j].mean(0) for j in range(labels.max() + 1)]))
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -np.inf)
        a, b = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        if similarity[a, b] < threshold:
            break
        labels = _renumber(np.where(labels == max(a, b), min(a, b), labels))
    return labels


def _renumber(labels: Ints) -> Ints:
    """Labels 0..k-1 in order of first appearance."""
    mapping: dict[int, int] = {}
    for label in labels.tolist():
        mapping.setdefault(label, len(mapping))
    return np.array([mapping[label] for label in labels.tolist()], dtype=np.int64)


def _finish(x: Floats, labels: Ints, confidence: float) -> Clusters:
    labels = _renumber(labels)
    centroids = unit(np.array([x[labels == j].mean(0) for j in range(int(labels.max()) + 1)]))
    return Clusters(labels, centroids, confidence)


# -- re-segmentation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """One embedded window, in frames of the re-segmentation grid (end exclusive)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Resegmenter:
    """Frame-level speaker assignment with a Viterbi smoothing pass.

    `temperature` turns cosine similarities into posteriors (softmax of sim / temperature);
    `change_penalty` is the log-probability cost of a speaker change between two frames;
    a second speaker whose posterior stays above `overlap_threshold` for at least
    `overlap_frames` frames is marked as speaking too, when the two voices are distinct enough
    (centroid similarity below `overlap_max_similarity`): between close voices a high second
    posterior means an ambiguous frame, not two people.
    """

    temperature: float = 0.05
    change_penalty: float = 6.0
    overlap_threshold: float = 0.1
    overlap_frames: int = 3
    overlap_max_similarity: float = 0.8

    def scores(self, windows: Sequence[Window], similarity: Floats, frames: int) -> Floats:
        """(frames, speakers) mean similarity of the windows covering each frame, each window weighted
        by a triangle peaking at its centre; frames no window covers are NaN."""
        total = np.zeros((frames, similarity.shape[1]))
        weight = np.zeros(frames)
        for w, row in zip(windows, similarity, strict=True):
            length = max(1, w.end - w.start)
            position = (np.arange(length) + 0.5) / length
            tri = 1.0 - np.abs(2.0 * position - 1.0) + 1e-3
            total[w.start : w.start + length] += tri[:, None] * row[None, :]
            weight[w.start : w.start + length] += tri
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(total / weight[:, None], dtype=np.float64)

    def posteriors(self, scores: Floats) -> Floats:
        """Softmax of the scores over speakers."""
        z = scores / self.temperature
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(1, keepdims=True), dtype=np.float64)

    def viterbi(self, posteriors: Floats) -> Ints:
        """The most likely speaker path through one region's frames."""
        n, k = posteriors.shape
        logp = np.log(np.maximum(posteriors, 1e-12))
        cost = logp[0].copy()
        back = np.zeros((n, k), dtype=np.int64)
        switch = np.full((k, k), -self.change_penalty)
        np.fill_diagonal(switch, 0.0)
        for t in range(1, n):
            candidates = cost[:, None] + switch  # from row to column
            back[t] = candidates.argmax(0)
            cost = candidates.max(0) + logp[t]
        path = np.zeros(n, dtype=np.int64)
        path[-1] = int(cost.argmax())
        for t in range(n - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
        return path

    def overlaps(self, posteriors: Floats, path: Ints, centroids: Floats) -> Ints:
        """Per frame, the second speaker heard at once (-1 for none)."""
        second = np.full(len(path), -1, dtype=np.int64)
        if posteriors.shape[1] < 2:
            return second
        masked = posteriors.copy()
        masked[np.arange(len(path)), path] = -1.0
        other = masked.argmax(1)
        distinct = (centroids @ centroids.T)[path, other] < self.overlap_max_similarity
        strong = (masked.max(1) >= self.overlap_threshold) & distinct
        start = None
        for t in range(len(path) + 1):
            on = t < len(path) and strong[t] and (start is None or other[t] == other[start])
            if on and start is None:
                start = t
            elif not on and start is not None:
                if t - start >= self.overlap_frames:
                    second[start:t] = other[start:t]
                start = t if t < len(path) and strong[t] else None
        return second
