#!/usr/bin/env python3
"""Trains the `discovery-gbdt` model: a LightGBM binary classifier of "will this user order from
this venue", on synthetic venues whose true order probability is known.

Run from the repository root (Python 3.11):

    pip install lightgbm==4.7.0 numpy
    python3 policies/discovery-gbdt/model/train.py

It writes, all checked in so that building and testing Relish needs no Python:

    policies/discovery-gbdt/model/model.json      the model, LightGBM's own dump_model() JSON;
                                                  build.rs turns it into static Rust arrays
    tests/fixtures/discovery-gbdt-evening.json    fixture requests (a user at dinner time, and
    tests/fixtures/discovery-gbdt-anonymous.json  the same venues for an anonymous visitor)
    policies/discovery-gbdt/model/reference.json  LightGBM's own predict() on every fixture
                                                  candidate: the component must match it to 1e-5

Everything is seeded, so a rerun with the same library version writes the same files.

The model's inputs are named in FEATURES. A name is either a candidate feature column of the
request, read as is (NaN when missing), or one of the inputs the policy derives (DERIVED); the
policy derives them exactly as `featurise` below does, in f32 arithmetic, so that the component
sees the very numbers LightGBM saw here.
"""

import json
import math
import pathlib
from datetime import datetime

import lightgbm as lgb
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "policies" / "discovery-gbdt" / "model"
FIXTURES = ROOT / "tests" / "fixtures"

FEATURES = [
    "rating",  # candidate column, 0..10
    "eta_min",  # candidate column, minutes
    "orders_7d",  # candidate column, count
    "conversion_rate_7d",  # derived: conversions_7d / impressions_7d (f32), NaN unless impressions > 0
    "user_orders",  # candidate column, the user's past orders from the venue
    "user_last_order_days",  # candidate column
    "affinity",  # derived: max(0, the user's affinity.<tag> over the venue's tags); NaN for users without features
    "daypart_match",  # derived: 1 if the venue carries the local daypart's tag, else 0
]
DERIVED = {"conversion_rate_7d", "affinity", "daypart_match"}

CUISINES = ["pizza", "sushi", "burger", "thai", "indian", "mexican", "vegan", "chinese", "kebab", "salad"]
DAYPARTS = ["breakfast", "lunch", "dinner"]

PARAMS = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 16,
    "max_depth": 5,
    "min_data_in_leaf": 40,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}
ROUNDS = 80

F32_NAN = np.float32("nan")


def true_logit(x):
    """The ground truth the model should learn: the log-odds that the user orders."""
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    rating = np.nan_to_num(col["rating"], nan=7.0)
    eta = np.nan_to_num(col["eta_min"], nan=45.0)
    conversion = np.nan_to_num(col["conversion_rate_7d"], nan=0.08)
    affinity = np.nan_to_num(col["affinity"], nan=0.3)
    orders = np.nan_to_num(col["user_orders"], nan=0.0)
    days = np.nan_to_num(col["user_last_order_days"], nan=60.0)
    reorder = np.minimum(orders, 5.0) / 5.0 * np.exp(-days / 30.0)
    return (
        -2.2
        + 0.55 * (rating - 7.5)
        - 0.045 * (eta - 30.0)
        + 0.25 * np.log1p(np.nan_to_num(col["orders_7d"], nan=0.0))
        + 9.0 * (conversion - 0.08)
        + 2.2 * affinity
        + 2.0 * reorder
        + 0.5 * col["daypart_match"]
    )


def synthetic_venue(rng, with_user):
    """One venue's candidate features (short decimals, as a caller sends them) and tags."""
    impressions = float(rng.integers(0, 5000))
    features = {
        "rating": round(float(rng.uniform(5.0, 10.0)), 1),
        "eta_min": float(rng.integers(10, 61)),
        "orders_7d": float(np.round(np.exp(rng.uniform(0.0, 7.0)))),
        "impressions_7d": impressions,
        "conversions_7d": float(np.round(impressions * rng.uniform(0.0, 0.25))),
        "is_open": 1.0 if rng.random() < 0.85 else 0.0,
    }
    if with_user:
        if rng.random() < 0.15:
            features["user_orders"] = float(rng.integers(1, 9))
            features["user_last_order_days"] = float(rng.integers(0, 121))
        elif rng.random() < 0.7:
            features["user_orders"] = 0.0
    for name, p in [("rating", 0.1), ("eta_min", 0.05), ("impressions_7d", 0.05), ("conversions_7d", 0.05)]:
        if rng.random() < p:
            del features[name]
    tags = [CUISINES[rng.integers(len(CUISINES))]]
    if rng.random() < 0.4:
        second = CUISINES[rng.integers(len(CUISINES))]
        if second != tags[0]:
            tags.append(second)
    if rng.random() < 0.5:
        tags.append(DAYPARTS[rng.integers(3)])
    return features, tags


def synthetic_user(rng):
    return {f"affinity.{c}": round(float(rng.uniform(0.0, 1.0)), 2) for c in CUISINES if rng.random() < 0.6}


def daypart(minute):
    hour = minute // 60
    if 5 <= hour <= 10:
        return "breakfast"
    if 11 <= hour <= 14:
        return "lunch"
    if 17 <= hour <= 22:
        return "dinner"
    return None


def f32(value):
    """A JSON number as the host reads it: parsed as f64, narrowed to f32."""
    return F32_NAN if value is None else np.float32(float(value))


def featurise_row(features, tags, user_features, now_daypart):
    """The model inputs of one candidate, exactly as the policy computes them (f32 arithmetic)."""
    get = lambda name: f32(features.get(name))
    row = []
    for name in FEATURES:
        if name == "conversion_rate_7d":
            conversions, impressions = get("conversions_7d"), get("impressions_7d")
            ok = not (np.isnan(conversions) or np.isnan(impressions)) and impressions > 0
            row.append(np.float32(conversions / impressions) if ok else F32_NAN)
        elif name == "affinity":
            if not user_features:
                row.append(F32_NAN)
            else:
                values = [f32(user_features[f"affinity.{t}"]) for t in tags if f"affinity.{t}" in user_features]
                row.append(max([np.float32(0.0)] + [v for v in values if not np.isnan(v)]))
        elif name == "daypart_match":
            row.append(np.float32(1.0 if now_daypart is not None and now_daypart in tags else 0.0))
        else:
            row.append(get(name))
    return [float(v) for v in row]


def featurise(request):
    """The model input matrix of a JSON request (row shape), and the candidate ids."""
    user_features = (request.get("user") or {}).get("features") or {}
    local = datetime.fromisoformat(request["context"]["time"])
    now_daypart = daypart(local.hour * 60 + local.minute)
    ids, rows = [], []
    for candidate in request["candidates"]:
        ids.append(candidate["id"])
        rows.append(featurise_row(candidate.get("features", {}), candidate.get("tags", []), user_features, now_daypart))
    return ids, np.array(rows, dtype=np.float64)


def training_data(rng, n):
    rows = []
    for _ in range(n):
        with_user = rng.random() < 0.8
        user = synthetic_user(rng) if with_user else {}
        features, tags = synthetic_venue(rng, with_user)
        minute = int(rng.integers(0, 1440))
        rows.append(featurise_row(features, tags, user, daypart(minute)))
    x = np.array(rows, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-true_logit(x)))
    y = (rng.random(n) < p).astype(np.float64)
    return x, y, p


def auc(scores, labels):
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = labels.sum()
    negatives = len(labels) - positives
    return (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)


def fixture_requests(rng, booster):
    """The evening fixture (a user with affinities at 18:30) and its anonymous twin. Besides
    ordinary venues they hold edge cases: a venue with no features (NaN at every split, both
    missing types), one with all zeros, and venues whose values are the f32 nearest to a split
    threshold, where comparing in f32 instead of f64 would take the other path. (`<=` against `<`
    cannot show here: LightGBM puts thresholds strictly between the values it trained on, a hair
    above the midpoint, so no f32 equals one; a unit test in src/forest.rs checks it instead.)"""
    user = {"affinity.pizza": 0.9, "affinity.sushi": 0.6, "affinity.burger": 0.25, "affinity.thai": 0.1}
    candidates = []
    for i in range(40):
        features, tags = synthetic_venue(rng, with_user=True)
        candidates.append({"id": f"venue-{i}", "features": features, "tags": tags})
    candidates.append({"id": "venue-no-features", "features": {}, "tags": []})
    zeros = {name: 0.0 for name in ["rating", "eta_min", "orders_7d", "impressions_7d", "conversions_7d",
                                     "user_orders", "user_last_order_days"]}
    candidates.append({"id": "venue-zeros", "features": zeros, "tags": ["pizza"]})
    base = {"rating": 8.0, "eta_min": 30.0, "orders_7d": 100.0, "impressions_7d": 1000.0, "conversions_7d": 100.0}
    splits = threshold_splits(booster)
    for k, (feature, threshold) in enumerate(splits[:12]):
        features = dict(base)
        # The f32 nearest to the threshold, written with enough digits to come back as exactly it.
        features[feature] = float(np.float32(threshold))
        candidates.append({"id": f"venue-on-split-{k}", "features": features, "tags": ["sushi", "dinner"]})
    evening = {
        "request_id": "r-gbdt-evening",
        "surface": "discovery",
        "user": {"id": "u-7", "features": user},
        "context": {"country": "FI", "city": "helsinki", "locale": "fi-FI", "device": "ios",
                    "time": "2026-11-28T18:30:00+02:00"},
        "candidates": candidates,
        "limit": 100,
    }
    anonymous = dict(evening, request_id="r-gbdt-anonymous", user=None)
    anonymous["candidates"] = [
        {**c, "features": {k: v for k, v in c["features"].items() if not k.startswith("user_")}} for c in candidates
    ]
    return {"discovery-gbdt-evening.json": evening, "discovery-gbdt-anonymous.json": anonymous}


def fixture_json(request):
    """The request as JSON, one candidate a line, like the other fixtures."""
    head = {k: v for k, v in request.items() if k != "candidates"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    candidates = ",\n".join(f"    {json.dumps(c)}" for c in request["candidates"])
    return "{\n" + "\n".join(lines) + f'\n  "candidates": [\n{candidates}\n  ]\n}}\n'


def threshold_splits(booster):
    """(candidate column, threshold) of the model's splits on raw candidate columns, first trees first."""
    splits = []

    def walk(node):
        if "split_feature" in node:
            name = FEATURES[node["split_feature"]]
            if name not in DERIVED and (name, node["threshold"]) not in splits:
                splits.append((name, node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"][:6]:
        walk(tree["tree_structure"])
    return splits


def main():
    rng = np.random.default_rng(20261128)
    x_train, y_train, _ = training_data(rng, 30_000)
    x_test, y_test, p_test = training_data(rng, 10_000)
    data = lgb.Dataset(x_train, label=y_train, feature_name=FEATURES, free_raw_data=False)
    booster = lgb.train(PARAMS, data, num_boost_round=ROUNDS)
    predicted = booster.predict(x_test)
    print(f"lightgbm {lgb.__version__}: {ROUNDS} trees, {PARAMS['num_leaves']} leaves, depth <= {PARAMS['max_depth']}")
    print(f"test AUC {auc(predicted, y_test):.4f} (the ground truth's own AUC: {auc(p_test, y_test):.4f})")
    print(f"correlation with the true probability: {np.corrcoef(predicted, p_test)[0, 1]:.4f}")

    model = booster.dump_model()
    (MODEL_DIR / "model.json").write_text(json.dumps(model, separators=(",", ":")) + "\n")

    reference = {
        "lightgbm": lgb.__version__,
        "note": "LightGBM's own Booster.predict() (the order probability) for every candidate of each fixture.",
        "fixtures": {},
    }
    for name, request in fixture_requests(rng, booster).items():
        text = fixture_json(request)
        (FIXTURES / name).write_text(text)
        ids, x = featurise(json.loads(text))
        reference["fixtures"][name] = dict(zip(ids, (float(p) for p in booster.predict(x))))
    (MODEL_DIR / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    for value in reference["fixtures"]["discovery-gbdt-evening.json"].values():
        assert math.isfinite(value)


if __name__ == "__main__":
    main()
