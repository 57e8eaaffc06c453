"""Few-shot recognition from a handful of labelled image features per class.

Two classifiers, scikit-learn style, over unit image features ``[N, D]`` (torch or
numpy in; float32 torch probabilities ``[M, n_classes]`` out, ready for
:class:`~taxonlens.recognize.decode.TreeDecoder`):

- :class:`SimpleShot` (Wang et al. 2019, BioCLIP's few-shot classifier): features
  centred on the support mean and L2-normalised ("CL2N"), one prototype per class
  (the mean of its support), nearest prototype wins;
- :class:`LinearProbe`: multinomial logistic regression fitted by L-BFGS.

Classes with no support get a score of ``-inf`` (probability 0), so a classifier
over all of a taxonomy's leaves works when only some species have examples.

The protocol of BioCLIP's 1-shot and 5-shot evaluation: :func:`sample_shots`
draws ``k`` training examples per class, and :func:`few_shot_accuracy` averages
the test accuracy over several draws (seeds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import nonmember
from typing import NamedTuple

import numpy as np
import torch

from taxonlens.choices import Choice


class FewShotMethod(Choice):
    """The few-shot classifier: ``simpleshot`` (prototypes, BioCLIP's) or ``linear`` (a linear probe)."""

    what = nonmember("few-shot method")
    simpleshot = "simpleshot"
    linear = "linear"


def classifier_class(method: str) -> type[_FewShotClassifier]:
    """The classifier of a :class:`FewShotMethod`.

    Raises:
        ChoiceError: an unknown method.
    """
    return SimpleShot if FewShotMethod(method) == FewShotMethod.simpleshot else LinearProbe


def _features(x: np.ndarray | torch.Tensor, what: str = "features") -> torch.Tensor:
    """float32 CPU ``[N, D]`` tensor from a numpy array or tensor."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [N, D], got shape {tuple(t.shape)}")
    return t.float()


def _labels(y: np.ndarray | torch.Tensor, n_rows: int, n_classes: int | None) -> tuple[torch.Tensor, int]:
    """int64 class ids ``[N]`` checked against the rows and ``n_classes``; returns them and n_classes."""
    y = torch.as_tensor(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y))
    if y.ndim != 1 or len(y) != n_rows:
        raise ValueError(f"need one label per feature row (got {n_rows} rows, labels of shape {tuple(y.shape)})")
    if n_rows == 0:
        raise ValueError("need at least one labelled example")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError("labels must be integer class ids")
    y = y.long()
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) (n_classes={n_classes}); got {int(y.min())}.."
                         f"{int(y.max())}")
    return y, n_classes


class _FewShotClassifier:
    """Shared ``predict`` / input checks and state; subclasses implement ``fit`` and
    ``decision_function`` and name their constructor arguments (``_PARAMS``) and fitted tensors
    (``_FITTED``, the first ``[n_classes, D]``)."""

    n_classes_: int
    n_features_: int
    _PARAMS: tuple[str, ...] = ()
    _FITTED: tuple[str, ...] = ()

    def get_state(self) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
        """``(constructor arguments, fitted tensors)`` of a fitted classifier, for :meth:`from_state`."""
        if not hasattr(self, "n_classes_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x, y) first")
        return {p: getattr(self, p) for p in self._PARAMS}, {a: getattr(self, a) for a in self._FITTED}

    @classmethod
    def from_state(cls, params: dict[str, object], tensors: dict[str, torch.Tensor]) -> _FewShotClassifier:
        """The fitted classifier whose :meth:`get_state` this was."""
        clf = cls(**params)
        for name in cls._FITTED:
            setattr(clf, name, tensors[name])
        clf.n_classes_, clf.n_features_ = tensors[cls._FITTED[0]].shape
        return clf

    def _check(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "n_classes_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x, y) first")
        x = _features(x)
        if x.shape[1] != self.n_features_:
            raise ValueError(f"features have {x.shape[1]} columns, the classifier was fitted on {self.n_features_}")
        return x

    def decision_function(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 ``[M, n_classes]`` class probabilities of features ``x [M, D]`` (0 for unsupported classes)."""
        return torch.softmax(self.decision_function(x), dim=1)

    def predict(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """int64 ``[M]`` most probable class of each row of ``x``."""
        return self.decision_function(x).argmax(dim=1)


class SimpleShot(_FewShotClassifier):
    """Nearest class prototype after centring and L2 normalisation (SimpleShot's CL2N).

    Args:
        metric: ``euclidean`` (score = minus the distance to the prototype, as SimpleShot)
            or ``cosine`` (score = cosine similarity to the prototype).
        temperature: probabilities are ``softmax(score / temperature)``.

    Attributes (after ``fit``):
        mean_: float32 ``[D]`` mean of the support features, subtracted from every input.
        prototypes_: float32 ``[n_classes, D]`` mean of each class's centred, normalised
            support (zeros for classes without support).
        supported_: bool ``[n_classes]``, which classes had support.
    """

    _PARAMS = ("metric", "temperature")
    _FITTED = ("prototypes_", "mean_", "supported_")

    def __init__(self, metric: str = "euclidean", temperature: float = 0.1):
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.metric, self.temperature = metric, temperature

    def transform(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``[M, D]`` features centred on the support mean and L2-normalised."""
        return torch.nn.functional.normalize(self._check(x) - self.mean_, dim=1)

    def fit(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, n_classes: int | None = None
            ) -> SimpleShot:
        """Support features ``x [N, D]`` with class ids ``y [N]`` in ``[0, n_classes)``
        (default ``max(y) + 1``)."""
        x = _features(x)
        y, n_classes = _labels(y, len(x), n_classes)
        self.n_classes_, self.n_features_ = n_classes, x.shape[1]
        self.mean_ = x.mean(dim=0)
        z = self.transform(x)
        counts = torch.bincount(y, minlength=n_classes)
        self.prototypes_ = torch.zeros(n_classes, x.shape[1]).index_add_(0, y, z) / counts.clamp(min=1)[:, None]
        self.supported_ = counts > 0
        return self

    def decision_function(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 ``[M, n_classes]`` scores divided by the temperature; ``-inf`` for unsupported classes."""
        z = self.transform(x)
        if self.metric == "euclidean":
            score = -torch.cdist(z, self.prototypes_)
        else:
            score = z @ torch.nn.functional.normalize(self.prototypes_, dim=1).T
        return (score / self.temperature).masked_fill(~self.supported_, float("-inf"))


class LinearProbe(_FewShotClassifier):
    """Multinomial logistic regression (softmax over the classes), fitted by L-BFGS.

    Minimises ``sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 c)`` (scikit-learn's
    ``LogisticRegression(C=c)``; the bias is not penalised) in float64 from zero
    weights, so a fit is deterministic. Classes without support are left out of the
    fit and get ``-inf`` scores.

    Args:
        c: inverse strength of the L2 penalty (> 0); larger fits the support more closely.
        max_iter: L-BFGS iterations at most.

    Attributes (after ``fit``):
        weight_: float32 ``[n_classes, D]`` (zero rows for unsupported classes).
        bias_: float32 ``[n_classes]`` (``-inf`` for unsupported classes).
    """

    _PARAMS = ("c", "max_iter")
    _FITTED = ("weight_", "bias_")

    def __init__(self, c: float = 1.0, max_iter: int = 200):
        if not c > 0:
            raise ValueError(f"c must be > 0, got {c}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.c, self.max_iter = c, max_iter

    def fit(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, n_classes: int | None = None
            ) -> LinearProbe:
        """Features ``x [N, D]`` with class ids ``y [N]`` in ``[0, n_classes)`` (default ``max(y) + 1``)."""
        x = _features(x)
        y, n_classes = _labels(y, len(x), n_classes)
        self.n_classes_, self.n_features_ = n_classes, x.shape[1]
        present = torch.unique(y)  # sorted
        target = torch.searchsorted(present, y)
        xd = x.double()
        w = torch.zeros(len(present), x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(len(present), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=self.max_iter, history_size=10, tolerance_grad=1e-9,
                                tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xd @ w.T + b, target, reduction="sum")
            loss = loss + (w * w).sum() / (2 * self.c)
            loss.backward()
            return loss

        if len(present) > 1:  # one class: nothing to separate, every row gets probability 1
            opt.step(closure)
        self.weight_ = torch.zeros(n_classes, x.shape[1])
        self.weight_[present] = w.detach().float()
        self.bias_ = torch.full((n_classes,), float("-inf"))
        self.bias_[present] = b.detach().float()
        return self

    def decision_function(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 ``[M, n_classes]`` logits; ``-inf`` for unsupported classes."""
        return self._check(x) @ self.weight_.T + self.bias_


# ------------------------------------------------------------------ protocol
def sample_shots(labels: np.ndarray | torch.Tensor, k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` examples per class (every example of a class with fewer), drawn
    without replacement; int64, sorted.

    Raises:
        ValueError: ``k < 1`` or labels that are not one-dimensional.
    """
    if k < 1:
        raise ValueError(f"k (shots per class) must be >= 1, got {k}")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=min(k, int((labels == c).sum())), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


class FewShotScore(NamedTuple):
    """Accuracy over the seeds of a few-shot protocol: ``mean`` and population ``std`` (0..1)."""

    mean: float
    std: float


def few_shot_accuracy(features: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                      test_features: np.ndarray | torch.Tensor, test_labels: np.ndarray | torch.Tensor, k: int,
                      seeds: int | Iterable[int] = 5,
                      method: str | Callable[[], _FewShotClassifier] = "simpleshot") -> FewShotScore:
    """BioCLIP's k-shot protocol: for each seed draw ``k`` training examples per class
    (:func:`sample_shots`), fit, and score top-1 accuracy on the whole test set.

    Args:
        features, labels: the pool ``[N, D]`` / ``[N]`` the shots are drawn from.
        test_features, test_labels: ``[M, D]`` / ``[M]``.
        k: shots per class (1 and 5 in BioCLIP).
        seeds: a number of seeds (``0 .. seeds-1``) or the seeds themselves.
        method: ``simpleshot``, ``linear``, or a factory returning an unfitted classifier.

    Returns:
        mean and standard deviation of the accuracy over the seeds.
    """
    features, test_features = _features(features), _features(test_features, "test features")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    test_labels = np.asarray(test_labels.cpu() if isinstance(test_labels, torch.Tensor) else test_labels)
    if len(labels) != len(features) or len(test_labels) != len(test_features):
        raise ValueError(f"need one label per feature row (got {len(features)} rows / {len(labels)} labels, "
                         f"{len(test_features)} test rows / {len(test_labels)} test labels)")
    if len(test_labels) == 0:
        raise ValueError("the test set is empty")
    if features.shape[1] != test_features.shape[1]:
        raise ValueError(f"features have {features.shape[1]} columns, test features {test_features.shape[1]}")
    if isinstance(method, str):
        method = classifier_class(method)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    n_classes = int(max(labels.max(initial=0), test_labels.max()) + 1)
    truth = torch.from_numpy(test_labels.astype(np.int64))
    accuracies = []
    for seed in seeds:
        idx = sample_shots(labels, k, seed)
        clf = method().fit(features[idx], labels[idx], n_classes)
        accuracies.append(float((clf.predict(test_features) == truth).double().mean()))
    return FewShotScore(float(np.mean(accuracies)), float(np.std(accuracies)))
