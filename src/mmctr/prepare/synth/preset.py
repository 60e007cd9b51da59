"""The knobs of a synthetic data set: sizes, the planted effects, and the named presets."""

from __future__ import annotations

from dataclasses import dataclass

TAGS_PER_ITEM = 5
EMB_DIM = 128
NUM_LEVELS = 10  # context levels 1..10; 0 means "unknown"


@dataclass(frozen=True)
class SynthPreset:
    """Sizes and planted effects of one synthetic data set; ``generate`` records all of it in
    dataset.json, so a data set says how it was made."""

    num_items: int  # rows of item_info INCLUDING the padding row 0
    num_tags: int  # tag vocabulary INCLUDING padding id 0
    num_users: int
    num_train: int
    num_valid: int
    num_test: int
    num_topics: int
    seq_len: int = 100  # stored history length
    chunk_rows: int = 100_000  # rows generated and written per parquet row group
    # History length = 3 + floor(lognormal(mu, sigma)): exp(mu)=3.5 puts the median at 6 and
    # sigma=0.95 the mean near 8 while leaving a tail that reaches seq_len on big splits.
    hist_mu: float = 1.2528
    hist_sigma: float = 0.95
    pop_sigma: float = 1.6  # log-popularity spread; large -> many rare items
    interest_frac: float = 0.5  # share of targets drawn from the user's current interest
    coef_affinity: float = 5.0
    coef_quality: float = 0.5
    coef_popularity: float = 0.3
    pos_rate: float = 0.25
    emb_noise: float = 1.2  # per-dimension noise std; the topic centroid has std 1
    emb_quality: float = 2.5  # norm of the quality direction per unit of quality
    eval_rows_per_user: int = 10  # valid/test draw users from a pool this much smaller

    def __post_init__(self) -> None:
        if self.num_items < self.num_topics + 1 or self.num_tags < self.num_topics + 1:
            raise ValueError("need at least one item and one tag per topic")
        if self.seq_len < 3 or min(self.num_train, self.num_valid, self.num_test) < 1:
            raise ValueError("seq_len must be >= 3 and every split needs at least one row")


PRESETS: dict[str, SynthPreset] = {
    "tiny": SynthPreset(300, 60, 200, 3_000, 500, 500, 8),
    "demo": SynthPreset(4_000, 600, 8_000, 200_000, 20_000, 20_000, 24),
    "microlens-1m": SynthPreset(91_718, 11_740, 100_000, 3_600_000, 10_000, 379_142, 64),
    # ten times microlens-1m's train rows (360 row groups of 100,000): for streaming, whose
    # memory must not grow with the split (docs/scale-out.md)
    "microlens-1m-x10": SynthPreset(91_718, 11_740, 100_000, 36_000_000, 10_000, 379_142, 64),
}

PLANTED = (
    "Each item has one latent topic, a heavy-tailed (lognormal) popularity and a standard-normal "
    "quality q. item_emb_d128 = topic centroid + q * quality direction + Gaussian noise "
    "(float32). Tags come mostly from a block owned by the item's topic, some are random, some "
    "items have none. Each user has a start and an end topic mixture (2-3 dominant topics plus "
    "background); history item at relative position t is drawn from (1-t)*start + t*end, items "
    "within a topic by popularity. Targets come from the end mixture (interest_frac) or from "
    "global popularity. P(click) = sigmoid(coef_affinity * end_mixture[target topic] + "
    "coef_quality * q + coef_popularity * z(log popularity) + bias), bias calibrated to "
    "pos_rate. views_level / likes_level are noisy decile bins of popularity / quality; "
    "item_info holds each item's bins without the noise (0 for the padding item)."
)
