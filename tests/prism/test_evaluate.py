from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from torch.utils.data import DataLoader, TensorDataset

from noisekit.errors import NoisekitError
from prism.evaluate import METRICS, embed_loader, retrieval_metrics

KEYS = (*METRICS, "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8")


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def pml(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The reference: pytorch-metric-learning, query = reference, self excluded."""
    calculator = AccuracyCalculator(include=METRICS, k="max_bin_count", device=torch.device("cpu"))
    return calculator.get_accuracy(embeddings, labels)


def assert_matches_pml(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    ours = retrieval_metrics(embeddings, labels)
    assert tuple(ours) == KEYS
    assert all(type(value) is float for value in ours.values())
    reference = pml(embeddings, labels)
    for name in METRICS:
        assert ours[name] == pytest.approx(reference[name], abs=1e-6), name
    assert ours["recall_at_1"] == ours["precision_at_1"]
    return ours


def brute_force_recall(embeddings: np.ndarray, labels: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """Recall@K from the full similarity matrix, over queries whose class has another member."""
    x = embeddings.astype(np.float64)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    ranked = np.argsort(-similarity, axis=1, kind="stable")
    same = labels[ranked] == labels[:, None]
    queries = (labels[:, None] == labels[None, :]).sum(axis=1) > 1
    return {k: float(same[queries, :k].any(axis=1).mean()) for k in ks}


@pytest.mark.parametrize(
    ("seed", "n", "dim", "classes"), [(0, 40, 4, 5), (1, 300, 8, 30), (2, 1000, 16, 60), (3, 2500, 32, 400)]
)
def test_random_embeddings_match_pml(seed: int, n: int, dim: int, classes: int) -> None:
    rng = np.random.default_rng(seed)
    assert_matches_pml(unit(rng.standard_normal((n, dim))), rng.integers(0, classes, n))


@pytest.mark.parametrize("seed", range(3))
def test_duplicates_and_ties_match_pml(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct vectors, big classes: long runs of exactly equal similarity inside every neighbour list.
    base = unit(rng.standard_normal((40, 16)))
    assert_matches_pml(base[rng.integers(0, 40, 800)], rng.integers(0, 6, 800))
    # Three distinct vectors in ~67 copies each, classes of ~4: the copies tied with a row push it out of its
    # k + 1 nearest, so the last neighbour is dropped instead of the row.
    base = unit(rng.standard_normal((3, 8)))
    assert_matches_pml(base[rng.integers(0, 3, 200)], rng.integers(0, 50, 200))
    # Mostly distinct vectors, some repeated up to four times, shuffled.
    base = unit(rng.standard_normal((400, 16)))
    rows = rng.permutation(np.repeat(np.arange(400), rng.integers(1, 5, 400)))
    assert_matches_pml(base[rows], rng.integers(0, 30, len(rows)))


def test_duplicates_never_retrieve_themselves() -> None:
    # Rows 0 and 1 are the same vector, as are rows 2 and 3, with different labels: each row's nearest neighbour is
    # its twin, of the other class. Dropping "position 0" instead of the row itself would let a twin whose copy
    # is listed first retrieve itself and score.
    embeddings = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1])
    ours = assert_matches_pml(embeddings, labels)
    assert ours["precision_at_1"] == ours["r_precision"] == ours["mean_average_precision_at_r"] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_size_one_classes_match_pml(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.integers(0, 20, 400), np.arange(100, 140)])  # 40 classes of size one
    labels = labels[rng.permutation(len(labels))]
    embeddings = unit(rng.standard_normal((len(labels), 12)))
    ours = assert_matches_pml(embeddings, labels)
    assert ours["recall_at_8"] == pytest.approx(brute_force_recall(embeddings, labels, (8,))[8], abs=1e-12)


def test_all_classes_of_size_one_give_nan_like_pml() -> None:
    embeddings = unit(np.random.default_rng(0).standard_normal((6, 3)))
    labels = np.arange(6)
    ours = retrieval_metrics(embeddings, labels)
    assert tuple(ours) == KEYS and all(math.isnan(value) for value in ours.values())
    assert all(math.isnan(value) for value in pml(embeddings, labels).values())


@pytest.mark.parametrize("seed", range(2))
def test_trained_like_embeddings_match_pml(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 40, 80)
    labels = np.repeat(np.arange(80), sizes)
    centres = unit(rng.standard_normal((80, 64)))
    embeddings = unit(centres[labels] + 0.12 * rng.standard_normal((len(labels), 64)))
    ours = assert_matches_pml(embeddings, labels)
    assert ours["precision_at_1"] > 0.95 and ours["mean_average_precision_at_r"] > 0.5


def test_hand_computed_case() -> None:
    # Seven points on the unit circle at these angles (degrees), so that similarity falls with |angle difference|:
    #   row    0  1  2  3   4   5   6
    #   angle  0  1  3  7  10  15  40
    #   label  A  A  B  A   B   B   C      A = {0, 1, 3}, B = {2, 4, 5}: R = 2; C = {6} has size one: left out.
    # Neighbours (nearest first) and their labels, with P@1, R-Precision (first R = 2) and AP@R:
    #   0: 1 2 3 4 5 6 -> A B A B B C   P@1 1  RP 1/2  AP (1/1) / 2 = 1/2
    #   1: 0 2 3 4 5 6 -> A B A B B C   P@1 1  RP 1/2  AP 1/2
    #   2: 1 0 3 4 5 6 -> A A A B B C   P@1 0  RP 0    AP 0     (first hit at rank 4)
    #   3: 4 2 1 0 5 6 -> B B A A B C   P@1 0  RP 0    AP 0     (first hit at rank 3)
    #   4: 3 5 2 1 0 6 -> A B B A A C   P@1 0  RP 1/2  AP (1/2) / 2 = 1/4
    #   5: 4 3 2 1 0 6 -> B A B A A C   P@1 1  RP 1/2  AP (1/1) / 2 = 1/2
    # Means over the six queries: P@1 = 3/6, R-Precision = 2/6, MAP@R = (1/2 + 1/2 + 1/4 + 1/2) / 6 = 7/24.
    # Recall@1 = 3/6; Recall@2 = 4/6 (rows 2 and 3 miss); Recall@4 = 1 (rows 2 and 3 hit at ranks 4 and 3);
    # Recall@8 = 1 (K capped at the 6 other rows).
    angles = np.deg2rad([0, 1, 3, 7, 10, 15, 40])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 1, 0, 1, 1, 2])
    expected = {
        "precision_at_1": 1 / 2,
        "mean_average_precision_at_r": 7 / 24,
        "r_precision": 1 / 3,
        "recall_at_1": 1 / 2,
        "recall_at_2": 2 / 3,
        "recall_at_4": 1.0,
        "recall_at_8": 1.0,
    }
    assert retrieval_metrics(embeddings, labels) == pytest.approx(expected, abs=1e-12)
    assert_matches_pml(unit(embeddings), labels)


@pytest.mark.parametrize(("seed", "n", "classes"), [(0, 60, 6), (1, 500, 50), (2, 1200, 300)])
def test_recall_matches_brute_force(seed: int, n: int, classes: int) -> None:
    rng = np.random.default_rng(seed)
    embeddings = unit(rng.standard_normal((n, 8)))
    labels = rng.integers(0, classes, n)
    ks = (1, 2, 3, 4, 8, 16, 10_000)
    ours = retrieval_metrics(embeddings, labels, recall_ks=ks)
    brute = brute_force_recall(embeddings, labels, ks)
    for k in ks:
        assert ours[f"recall_at_{k}"] == pytest.approx(brute[k], abs=1e-12), k
    assert ours["recall_at_1"] == ours["precision_at_1"]
    repeated = retrieval_metrics(embeddings, labels, recall_ks=(4, 4, 2))
    assert repeated == {
        **{name: ours[name] for name in METRICS},
        "recall_at_4": ours["recall_at_4"],
        "recall_at_2": ours["recall_at_2"],
    }


def test_unnormalised_tensors_give_the_same_metrics() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((200, 8)) * rng.uniform(0.1, 10, (200, 1))
    labels = rng.integers(0, 20, 200)
    tensors = retrieval_metrics(torch.tensor(embeddings, requires_grad=True), torch.from_numpy(labels))
    assert tensors == pytest.approx(retrieval_metrics(unit(embeddings), labels), abs=1e-6)


@pytest.mark.parametrize(
    ("embeddings", "labels", "recall_ks", "argument"),
    [
        (np.zeros(4), np.arange(4), (1,), "embeddings"),
        (np.ones((4, 2)), np.zeros((4, 1), dtype=int), (1,), "labels"),
        (np.ones((4, 2)), np.zeros(4), (1,), "labels"),
        (np.ones((4, 2)), np.zeros(3, dtype=int), (1,), "labels"),
        (np.ones((1, 2)), np.zeros(1, dtype=int), (1,), "embeddings"),
        (np.ones((4, 0)), np.zeros(4, dtype=int), (1,), "embeddings"),
        (np.array([[1.0, np.nan], [1, 0], [0, 1]]), np.zeros(3, dtype=int), (1,), "embeddings"),
        (np.array([[1.0, np.inf], [1, 0], [0, 1]]), np.zeros(3, dtype=int), (1,), "embeddings"),
        (np.array([["a", "b"], ["c", "d"]]), np.zeros(2, dtype=int), (1,), "embeddings"),
        (np.ones((4, 2)), np.zeros(4, dtype=int), (0, 1), "recall_ks"),
        (np.ones((4, 2)), np.zeros(4, dtype=int), (), "recall_ks"),
    ],
)
def test_bad_input_names_the_argument(
    embeddings: np.ndarray, labels: np.ndarray, recall_ks: tuple[int, ...], argument: str
) -> None:
    with pytest.raises(NoisekitError) as caught:
        retrieval_metrics(embeddings, labels, recall_ks=recall_ks)
    message = str(caught.value)
    assert message.startswith(f"{argument}: ") and "\n" not in message


class Embedder(torch.nn.Module):
    """Images (b, 3, 4, 4) -> (b, 5), with dropout so that train mode would change the output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(48, 5)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(images.flatten(1)))


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 4, 4, generator=generator), torch.randint(0, 4, (n,), generator=generator)


@pytest.mark.parametrize("with_indices", [True, False])
def test_embed_loader_normalises_in_eval_mode_and_restores_modes(with_indices: bool) -> None:
    torch.manual_seed(0)
    model = Embedder()
    model.train()
    model.dropout.eval()  # a submodule in its own mode must come back as it was
    images, labels = _images(23)
    tensors = (images, labels, torch.arange(23)) if with_indices else (images, labels)
    loader = DataLoader(TensorDataset(*tensors), batch_size=5)

    embeddings, got_labels = embed_loader(model, loader, torch.device("cpu"))

    assert model.training and model.linear.training and not model.dropout.training
    assert embeddings.dtype == np.float32 and embeddings.shape == (23, 5)
    assert got_labels.dtype == np.int64 and np.array_equal(got_labels, labels.numpy())
    expected = torch.nn.functional.normalize(model.linear(images.flatten(1)), dim=1).detach().numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)


def test_embed_loader_restores_eval_mode() -> None:
    model = Embedder().eval()
    images, labels = _images(4)
    embed_loader(model, DataLoader(TensorDataset(images, labels), batch_size=2), torch.device("cpu"))
    assert not any(module.training for module in model.modules())


def test_embed_loader_rejects_bad_batches_and_empty_loaders() -> None:
    model = Embedder().train()
    images, _ = _images(4)
    with pytest.raises(NoisekitError, match=r"^loader: expected batches of \(images, labels"):
        embed_loader(model, DataLoader(TensorDataset(images), batch_size=2), torch.device("cpu"))
    assert model.training
    with pytest.raises(NoisekitError, match=r"^loader: yielded no batches$"):
        embed_loader(model, DataLoader(TensorDataset(images[:0], images[:0]), batch_size=2), torch.device("cpu"))
