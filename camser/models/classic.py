"""Utterance-level baselines that are not gradient-trained networks (``kind="sklearn"``).

Each is an :class:`~camser.models.base.UtteranceModel`: one vector per utterance
(``utterance_matrix(data, sample_rate)``, computed once per run), ``fit(X, y, groups)`` on the
fold's training utterances (its validation speakers are left out, as for the networks, unless
the model chooses its hyper-parameters on inner speaker folds) and ``predict_proba(X)``.

Models:

* ``mlp`` — scikit-learn ``MLPClassifier`` (one hidden layer of 300 ReLU units) on the
  concatenated time-means of MFCC, chroma and mel-spectrogram frames (``model.features``),
  standardised. The means run over each utterance's real frames: the last segment's zero
  padding is left out.
* ``opensmile`` — openSMILE functionals of the whole utterance (``model.feature_set``:
  eGeMAPSv02, ComParE_2016, IS09_emotion, ...; cached, see
  :mod:`camser.features.functionals`) → ``StandardScaler`` → SVM (``svm``) or logistic
  regression (``logreg``).
* ``random`` — guesses: ``stratified`` draws each prediction from the training class priors,
  ``uniform`` from all classes equally; seeded by the run's seed.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..config import checked
from ..errors import ConfigError
from ..features.functionals import FEATURE_SETS
from .base import UtteranceModel
from .registry import register_model
from .baselines import FRAME_FEATURE, config_from, feature_key


class EstimatorModel(UtteranceModel):
    """A scikit-learn estimator (or pipeline) behind :class:`UtteranceModel`. Probabilities
    come from ``predict_proba`` or, for estimators without it (an SVM without Platt scaling),
    the softmax of ``decision_function`` (scores, not calibrated; their argmax is the
    prediction). Columns follow the label indices; a class absent from the training
    utterances gets probability 0. Non-finite features (openSMILE on a silent file) become 0."""

    def __init__(self, estimator, n_classes: int, use_scores: bool = False):
        self.estimator, self.n_classes, self.use_scores = estimator, n_classes, use_scores

    def fit(self, X, y, groups=None):
        from sklearn.exceptions import ConvergenceWarning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message=".*batch_size.*")
            self.estimator.fit(np.nan_to_num(np.asarray(X, dtype=np.float64)), np.asarray(y))
        return self

    def predict_proba(self, X):
        X = np.nan_to_num(np.asarray(X, dtype=np.float64))
        classes = np.asarray(self.estimator.classes_, dtype=np.int64)
        if self.use_scores:
            s = self.estimator.decision_function(X)
            if s.ndim == 1:                       # two classes: one score for classes_[1]
                s = np.stack([-s, s], 1)
            s = np.exp(s - s.max(1, keepdims=True))
            p = s / s.sum(1, keepdims=True)
        else:
            p = self.estimator.predict_proba(X)
        out = np.zeros((len(X), self.n_classes))
        out[:, classes] = p
        return out


# ---------------------------------------------------------------- features: utterance means

def utterance_means(data, kinds: list[str], sample_rate: int, std: bool = False,
                    max_elements: int = 1 << 25) -> np.ndarray:
    """Per utterance (``data.utterances`` order), the time-mean (and std, if asked) of each
    store kind's frames, concatenated over ``kinds``: ``(n_utterances, Σ D)`` float32.
    Only real frames count (the first ``ceil(valid · T)`` of each segment, as
    :func:`~camser.models.blocks.frame_mask`); SSL frames with every layer cached give each
    layer's mean (``L · D``)."""
    from ..segments import valid_fractions

    index_of = {u.id: i for i, u in enumerate(data.utterances)}
    # the stores' rows may also hold augmented copies (a network beside this model trains on
    # them, see `vote`): they belong to no utterance here and are skipped
    every = getattr(data, "every_utterance", data.utterances)
    blocks = []
    for kind in kinds:
        store = data.stores[kind]
        shape = store.array.shape
        n_frames = shape[-2]
        width = int(np.prod(shape[1:])) // n_frames
        valid = valid_fractions(store.index, every, sample_rate)
        owner = np.array([index_of.get(s.utterance_id, -1) for s in store.index], dtype=np.int64)
        s1 = np.zeros((len(data.utterances), width))
        s2 = np.zeros_like(s1) if std else None
        count = np.zeros(len(data.utterances))
        step = max(1, max_elements // int(np.prod(shape[1:])))
        for r0 in range(0, len(store), step):
            a = np.asarray(store.array[r0:r0 + step], dtype=np.float32)
            if a.ndim == 4:                                          # (n, L, T, D) → (n, T, L·D)
                a = a.transpose(0, 2, 1, 3).reshape(len(a), n_frames, -1)
            nv = np.clip(np.ceil(valid[r0:r0 + step] * n_frames), 1, n_frames)
            mine = owner[r0:r0 + step] >= 0
            a, nv, rows = a[mine], nv[mine], owner[r0:r0 + step][mine]
            m = (np.arange(n_frames)[None, :] < nv[:, None]).astype(np.float32)[..., None]
            np.add.at(s1, rows, (a * m).sum(1))
            if std:
                np.add.at(s2, rows, (a * a * m).sum(1))
            np.add.at(count, rows, nv)
        mean = s1 / count[:, None]
        blocks.append(mean)
        if std:
            blocks.append(np.sqrt(np.maximum(s2 / count[:, None] - mean * mean, 0.0)))
    return np.concatenate(blocks, 1).astype(np.float32)


# ---------------------------------------------------------------- mlp

# Every field declares its allowed values (checked by from_dict; tests/test_model_config_fuzz.py).
@dataclass
class MLPConfig:
    n_classes: int = checked(4, ge=1)
    features: list[str] = checked(lambda: ["mfcc", "chroma", "melspec"], **FRAME_FEATURE, items=True, min_items=1)
    std: bool = False                 # also the time-std of each feature
    hidden: int = checked(300, ge=1)  # one hidden layer of ReLU units
    alpha: float = checked(0.01, ge=0)   # L2 penalty
    batch_size: int = checked(256, ge=1)
    learning_rate: float = checked(1e-3, gt=0)   # Adam
    max_iter: int = checked(500, ge=1)
    scale: bool = True                # StandardScaler first


class MeansMLP(EstimatorModel):
    trains_on_copies = True

    def __init__(self, config: MLPConfig, seed: int):
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.config = c = config
        mlp = MLPClassifier(hidden_layer_sizes=(c.hidden,), activation="relu", alpha=c.alpha,
                            batch_size=c.batch_size, learning_rate_init=c.learning_rate, max_iter=c.max_iter,
                            random_state=seed)
        super().__init__(make_pipeline(StandardScaler(), mlp) if c.scale else mlp, c.n_classes)
        self.kinds = [feature_key(f, "model.features") for f in c.features]

    def utterance_matrix(self, data, sample_rate: int) -> np.ndarray:
        return utterance_means(data, self.kinds, sample_rate, std=self.config.std)


def _mlp_inputs(section: dict) -> set[str]:
    features = section.get("features", MLPConfig().features)
    if not isinstance(features, list):
        raise ConfigError(f"model.features: expected a list, got {features!r}")
    return {feature_key(f, "model.features") for f in features}


@register_model("mlp", inputs=_mlp_inputs, kind="sklearn", config=MLPConfig)
def _build_mlp(section: dict, n_classes: int, feature_dims: dict, seed: int = 0) -> MeansMLP:
    return MeansMLP(config_from(MLPConfig, section, n_classes), seed)


# ---------------------------------------------------------------- opensmile

CLASSIFIERS = ("svm", "logreg")


@dataclass
class OpenSmileConfig:
    n_classes: int = checked(4, ge=1)
    # eGeMAPSv02 | ComParE_2016 | IS09_emotion | ... (functionals.FEATURE_SETS)
    feature_set: str = checked("eGeMAPSv02", choices=tuple(FEATURE_SETS))
    classifier: str = checked("svm", choices=CLASSIFIERS)   # svm | logreg
    C: float = checked(1.0, gt=0)
    kernel: str = checked("rbf", choices=("rbf", "linear"))   # svm only
    class_weight: str | None = checked(None, choices=("balanced",))   # null | balanced
    max_iter: int = checked(1000, ge=1)   # logreg only


class FunctionalsClassifier(EstimatorModel):
    def __init__(self, config: OpenSmileConfig, seed: int):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.config = c = config
        if c.classifier == "svm":
            clf = SVC(C=c.C, kernel=c.kernel, class_weight=c.class_weight, random_state=seed)
        else:
            clf = LogisticRegression(C=c.C, max_iter=c.max_iter, class_weight=c.class_weight, random_state=seed)
        super().__init__(make_pipeline(StandardScaler(), clf), c.n_classes, use_scores=c.classifier == "svm")

    def utterance_matrix(self, data, sample_rate: int) -> np.ndarray:
        store = data.utterance_stores.get("opensmile")
        if store is None:
            raise ConfigError("model.name: opensmile needs its functionals (prepared by the cv run)")
        row = {s.utterance_id: r for r, s in enumerate(store.index)}
        return np.asarray(store.array, dtype=np.float32)[[row[u.id] for u in data.utterances]]


def _prepare_opensmile(cfg, utterances, cache_dir, progress: bool = True) -> dict:
    from ..features.functionals import functionals_store
    c = config_from(OpenSmileConfig, cfg.model, cfg.model.get("n_classes", 1))
    return {"opensmile": functionals_store(utterances, cfg, c.feature_set, cache_dir, progress=progress)}


def _opensmile_inputs(section: dict) -> set[str]:
    config_from(OpenSmileConfig, section, section.get("n_classes", 1))     # fail early on bad fields
    return {"opensmile"}


@register_model("opensmile", inputs=_opensmile_inputs, kind="sklearn", prepare=_prepare_opensmile,
                config=OpenSmileConfig)
def _build_opensmile(section: dict, n_classes: int, feature_dims: dict, seed: int = 0) -> FunctionalsClassifier:
    return FunctionalsClassifier(config_from(OpenSmileConfig, section, n_classes), seed)


# ---------------------------------------------------------------- linear probe

@dataclass
class LinearConfig:
    n_classes: int = checked(4, ge=1)
    # mean (average of the cached hidden states) | all (concatenated) | each (one regression per
    # layer, their probabilities averaged) | an index (checked against the cached layers when the
    # features are read; negative ones count from the end) | a list of these, chosen with C on the
    # inner folds
    layer: int | str | list[int | str] = checked("mean", choices=("mean", "all", "each"), items=True,
                                                 min_items=1)
    std: bool = False                 # mean + std pooling over the utterance's real frames
    # one, or several (chosen on inner folds)
    C: float | list[float] = checked(lambda: [0.01, 0.1, 1.0], gt=0, items=True, min_items=1)
    inner_folds: int = checked(4, ge=2)   # speaker-grouped folds of the training speakers that choose C
    class_weight: str | None = checked(None, choices=("balanced",))   # null | balanced
    max_iter: int = checked(2000, ge=1)
    # processes for the inner-fold fits and a per-layer probe's regressions (scikit-learn's n_jobs;
    # null: one): each fit runs on one BLAS thread, so the figures are the same whatever the number
    n_jobs: int | None = checked(None, ge=1)


def _select_parts(x: np.ndarray, n_layers: int, layer, n_parts: int) -> np.ndarray:
    """:func:`select_layers` on each of the ``n_parts`` equal column blocks of ``x`` (mean | std)."""
    return np.concatenate([select_layers(p, n_layers, layer) for p in np.split(x, n_parts, axis=1)], 1)


def select_layers(vectors: np.ndarray, n_layers: int, layer) -> np.ndarray:
    """``(n, L·D)`` per-layer vectors → ``(n, D)`` (``mean``, or one layer) or ``(n, L·D)``
    (``all``, and ``each``, whose regressions select their own layer)."""
    v = vectors.reshape(len(vectors), n_layers, -1)
    if layer in ("all", "each"):
        return vectors
    if layer == "mean":
        return v.mean(1)
    if not -n_layers <= layer < n_layers:
        raise ConfigError(f"model.layer: {layer} is out of range for {n_layers} cached layers")
    return v[:, layer]


@contextmanager
def one_blas_thread():
    """lbfgs on a multi-threaded BLAS rounds differently from one thread (the inner folds can then
    choose another C), so the probe fits and predicts on one BLAS thread, in this process and in
    joblib's workers: the same figures whatever ``n_jobs`` and the machine's cores."""
    from joblib import parallel_config
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency
    with threadpool_limits(limits=1, user_api="blas"), parallel_config(backend="loky", inner_max_num_threads=1):
        yield


class LinearProbe(EstimatorModel):
    """The linear probe of the SSL literature (SUPERB, EmoBox): pooled SSL vectors →
    StandardScaler → logistic regression. ``layer: each`` fits one such probe per cached layer
    and averages their probabilities (scikit-learn's soft ``VotingClassifier``): each layer's
    regression is fitted on 2·D values instead of 2·L·D, less to overfit on a few hundred
    utterances. With several ``C`` the one with the best mean UA on
    ``inner_folds`` speaker-grouped folds of the training speakers is refitted on all of them
    (``chosen`` records it), so no test speaker chooses anything. It fits on the validation
    speakers too: it has no epochs to pick on them."""

    fits_validation_speakers = True
    seeded = False                      # lbfgs: the same fit whatever the seed
    trains_on_copies = True

    def __init__(self, config: LinearConfig, seed: int, n_layers: int = 1):
        self.config, self.seed, self.chosen, self.n_layers = config, seed, None, n_layers
        super().__init__(self._pipeline(self._candidates()[0]), config.n_classes)

    @property
    def _layer_choice(self) -> bool:
        """Several ``layer`` candidates: the matrix keeps every layer and each candidate's
        pipeline selects its own."""
        return isinstance(self.config.layer, list)

    def _candidates(self) -> list[tuple]:
        """(layer, C) pairs, layer None when the matrix is already the configured layer's."""
        cs = [float(c) for c in (self.config.C if isinstance(self.config.C, list) else [self.config.C])]
        layers = self.config.layer if self._layer_choice else ["each" if self.config.layer == "each" else None]
        return [(layer, c) for layer in layers for c in cs]

    def _pipeline(self, candidate: tuple, n_jobs: int | None = None):
        from sklearn.ensemble import VotingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler
        layer, C = candidate

        def probe(layer):
            steps = [] if layer is None else [FunctionTransformer(partial(
                _select_parts, n_layers=self.n_layers, layer=layer, n_parts=2 if self.config.std else 1))]
            return make_pipeline(*steps, StandardScaler(), LogisticRegression(
                C=C, max_iter=self.config.max_iter, class_weight=self.config.class_weight, random_state=self.seed))

        if layer != "each" or self.n_layers == 1:
            return probe(None if layer == "each" else layer)
        return VotingClassifier([(f"layer{i}", probe(i)) for i in range(self.n_layers)], voting="soft",
                                n_jobs=n_jobs)

    def utterance_matrix(self, data, sample_rate: int) -> np.ndarray:
        store = data.stores.get("ssl")
        if store is None:
            raise ConfigError("model.name: linear reads SSL frames (features.kinds must include ssl)")
        n_layers = store.array.shape[1] if store.array.ndim == 4 else 1
        means = utterance_means(data, ["ssl"], sample_rate, std=self.config.std)
        for candidate in (self.config.layer if self._layer_choice else []):    # fail before any fit
            select_layers(np.zeros((1, n_layers)), n_layers, candidate)
        layer = "all" if self._layer_choice else self.config.layer     # each: all, split by its probes
        return _select_parts(means, n_layers, layer, 2 if self.config.std else 1)

    def fit(self, X, y, groups=None):
        with one_blas_thread():
            return self._fit(X, y, groups)

    def predict_proba(self, X):
        with one_blas_thread():
            return super().predict_proba(X)

    def _fit(self, X, y, groups):
        candidates = self._candidates()
        chosen = candidates[0]
        if len(candidates) > 1:
            scores = self._inner_scores(np.asarray(X), np.asarray(y), groups, candidates)
            chosen = max(candidates, key=lambda c: scores[c])
            name = (lambda c: str(c[1])) if not self._layer_choice else (lambda c: f"layer {c[0]}, C {c[1]}")
            self.chosen = {"C": chosen[1], **({"layer": chosen[0]} if self._layer_choice else {}),
                           "inner_ua": {name(c): round(scores[c], 4) for c in candidates}}
        self.estimator = self._pipeline(chosen, n_jobs=self.config.n_jobs)
        return super().fit(X, y)

    def _inner_scores(self, X, y, groups, candidates) -> dict:
        from sklearn.metrics import recall_score
        from sklearn.model_selection import GroupKFold
        if groups is None or len(set(groups)) < self.config.inner_folds:
            raise ConfigError(f"model.inner_folds: {self.config.inner_folds} speaker-grouped folds need at least "
                              f"as many training speakers (got {0 if groups is None else len(set(groups))})")
        from joblib import Parallel, delayed
        splits = list(GroupKFold(self.config.inner_folds).split(X, y, groups))

        def inner_ua(c, tr, te):
            m = EstimatorModel(self._pipeline(c), self.n_classes).fit(X[tr], y[tr])
            return recall_score(y[te], m.predict(X[te]), average="macro")

        uas = Parallel(n_jobs=self.config.n_jobs)(delayed(inner_ua)(c, tr, te) for c in candidates for tr, te in splits)
        per = len(splits)
        return {c: float(np.mean(uas[i * per:(i + 1) * per])) for i, c in enumerate(candidates)}


@register_model("linear", inputs=lambda section: {"ssl"}, kind="sklearn", config=LinearConfig)
def _build_linear(section: dict, n_classes: int, feature_dims: dict, seed: int = 0) -> LinearProbe:
    ssl = tuple(feature_dims.get("ssl") or ())
    return LinearProbe(config_from(LinearConfig, section, n_classes), seed, n_layers=ssl[0] if len(ssl) == 3 else 1)


# ---------------------------------------------------------------- random

@dataclass
class RandomConfig:
    n_classes: int = checked(4, ge=1)
    # stratified (training class priors) | uniform
    strategy: str = checked("stratified", choices=("stratified", "uniform"))


class RandomGuess(UtteranceModel):
    """One-hot "probabilities" of a random guess per utterance; the same seed, training labels
    and calls give the same guesses."""

    def __init__(self, config: RandomConfig, seed: int):
        self.config, self.n_classes, self.seed = config, config.n_classes, seed
        self.prior = np.full(self.n_classes, 1.0 / self.n_classes)
        self.rng = np.random.default_rng(seed)

    def utterance_matrix(self, data, sample_rate: int) -> np.ndarray:
        return np.zeros((len(data.utterances), 1), dtype=np.float32)

    def fit(self, X, y, groups=None):
        self.rng = np.random.default_rng(self.seed)
        if self.config.strategy == "stratified":
            counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=self.n_classes).astype(float)
            self.prior = counts / counts.sum()
        return self

    def predict_proba(self, X):
        guess = self.rng.choice(self.n_classes, size=len(X), p=self.prior)
        return np.eye(self.n_classes)[guess]


@register_model("random", inputs=lambda section: set(), kind="sklearn", config=RandomConfig)
def _build_random(section: dict, n_classes: int, feature_dims: dict, seed: int = 0) -> RandomGuess:
    return RandomGuess(config_from(RandomConfig, section, n_classes), seed)
