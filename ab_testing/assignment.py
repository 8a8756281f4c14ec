"""Deterministic, sticky assignment of units (users or API keys) to variants.

A unit's bucket is ``SHA-256(experiment id, unit id) mod 10,000``: stable across processes, machines
and restarts (unlike Python's salted ``hash``), independent between experiments (the experiment id
is part of the hash), and uniform. Variants own contiguous bucket ranges sized by their weights in
basis points (1 bp = 0.01 % = one bucket).

Layout and the monotone ramp. The first variant is the control (stable). The other variants are laid
out from bucket 0 upwards in order and the control takes the rest, at the top::

    canary at 5 %:   [0 ........ 500)[500 ........................................ 10000)  stable
    canary at 10 %:  [0 ................ 1000)[1000 ................................ 10000)  stable

Raising the canary only moves the buckets in [500, 1000) from stable to canary; nobody moves from
canary back to stable, so a user who has seen the canary keeps seeing it while it ramps up (and
lowering it is the mirror image). With more than two variants the same holds for weight moved
between the control and the *last* variant; moving weight to an earlier variant shifts the ranges
after it. Kohavi et al. and GrowthBook advise against re-weighting a running multi-arm test anyway.
"""

from __future__ import annotations

import dataclasses
import hashlib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from huabu.ab_testing._base import FrozenModel, check_identifier

BUCKETS = 10_000  # one bucket per basis point of traffic
STABLE = "stable"
CANARY = "canary"


class UnknownVariantError(ValueError):
    """An override named a variant (or model) that the split does not contain."""


def bucket_for(experiment_id: str, unit_id: str) -> int:
    """The unit's bucket in [0, 10,000) for this experiment."""
    if not unit_id:
        raise ValueError("unit id must be a non-empty string (a user id, API key id or request id)")
    # The unit separator cannot appear in a well-formed id, so ("ab", "c") and ("a", "bc") differ.
    digest = hashlib.sha256(f"{experiment_id}\x1f{unit_id}".encode()).digest()
    # 64 bits mod 10,000: the modulo bias is below 1e-15, far under any measurable effect.
    return int.from_bytes(digest[:8], "big") % BUCKETS


def percent_to_bp(percent: float) -> int:
    """Traffic percent (e.g. 5 or 0.5) to basis points (500, 50)."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    return round(percent * 100)


class Variant(FrozenModel):
    name: str  # e.g. "stable" / "canary"; recorded on every result, job and trace
    weight_bp: int = Field(ge=0, le=BUCKETS)
    model: str | None = None  # the deployment it routes to, "name@version"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_identifier(v, "variant name")


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one request went and why; store it on the job so feedback can be attributed later.

    A dataclass rather than a pydantic model: one is built per request, and construction is ~20x
    cheaper. Pydantic models accept it as a field type; ``to_dict``/``from_dict`` give plain JSON.
    """

    experiment_id: str
    version: int  # the split version (rollout phase) that made the assignment
    variant: str
    model: str | None
    bucket: int | None  # None for forced assignments
    forced: bool  # True when an override chose the variant: not randomised, kept out of the stats
    reason: Literal["hash", "override"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Assignment:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


class TrafficSplit(FrozenModel):
    """Weights of an experiment's variants; ``version`` increases with every change of weights."""

    experiment_id: str
    version: int = Field(default=0, ge=0)
    variants: tuple[Variant, ...]

    @field_validator("experiment_id")
    @classmethod
    def _experiment(cls, v: str) -> str:
        return check_identifier(v, "experiment id")

    @model_validator(mode="after")
    def _weights(self) -> TrafficSplit:
        if not self.variants:
            raise ValueError("a split needs at least one variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        total = sum(v.weight_bp for v in self.variants)
        if total != BUCKETS:
            raise ValueError(f"variant weights must add up to {BUCKETS} bp (100 %), got {total}")
        return self

    @classmethod
    def canary(
        cls,
        experiment_id: str,
        *,
        stable_model: str | None,
        canary_model: str | None,
        canary_percent: float,
        version: int = 0,
    ) -> TrafficSplit:
        """The two-variant split of a rollout: ``stable`` (control) and ``canary``."""
        bp = percent_to_bp(canary_percent)
        return cls(
            experiment_id=experiment_id,
            version=version,
            variants=(
                Variant(name=STABLE, weight_bp=BUCKETS - bp, model=stable_model),
                Variant(name=CANARY, weight_bp=bp, model=canary_model),
            ),
        )

    @property
    def weights(self) -> dict[str, int]:
        """Weights in basis points by variant name."""
        return {v.name: v.weight_bp for v in self.variants}

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise UnknownVariantError(f"experiment {self.experiment_id!r} has no variant {name!r}")

    def ranges(self) -> dict[str, range]:
        """Bucket range of each variant (see the module docstring for the layout)."""
        out: dict[str, range] = {}
        start = 0
        for v in self.variants[1:]:
            out[v.name] = range(start, start + v.weight_bp)
            start += v.weight_bp
        control = self.variants[0]
        out[control.name] = range(start, BUCKETS)
        return {v.name: out[v.name] for v in self.variants}

    def variant_for_bucket(self, bucket: int) -> Variant:
        if not 0 <= bucket < BUCKETS:
            raise ValueError(f"bucket must be in [0, {BUCKETS}), got {bucket}")
        treatments = self.variants[1:]
        upper: list[int] = []  # exclusive upper bounds of the treatment ranges
        acc = 0
        for v in treatments:
            acc += v.weight_bp
            upper.append(acc)
        i = bisect_right(upper, bucket)
        # Zero-weight ranges are empty, so bisect_right skips them and lands on the owner.
        return treatments[i] if i < len(treatments) else self.variants[0]

    def assign(self, unit_id: str, override: str | None = None) -> Assignment:
        """The variant for ``unit_id``; ``override`` (a variant or model name) forces one for testing.

        Raises UnknownVariantError for an override the split does not contain (answer it with a 400,
        not by silently ignoring a header someone relies on).
        """
        if override:
            for v in self.variants:
                if override in (v.name, v.model):
                    return Assignment(
                        experiment_id=self.experiment_id,
                        version=self.version,
                        variant=v.name,
                        model=v.model,
                        bucket=None,
                        forced=True,
                        reason="override",
                    )
            known = [v.name for v in self.variants] + [v.model for v in self.variants if v.model]
            raise UnknownVariantError(f"override {override!r} is not one of {known}")
        bucket = bucket_for(self.experiment_id, unit_id)
        v = self.variant_for_bucket(bucket)
        return Assignment(
            experiment_id=self.experiment_id,
            version=self.version,
            variant=v.name,
            model=v.model,
            bucket=bucket,
            forced=False,
            reason="hash",
        )

    def with_weights(self, weights_bp: Mapping[str, int]) -> TrafficSplit:
        """A copy with new weights (names missing from ``weights_bp`` keep theirs) and version + 1."""
        unknown = set(weights_bp) - {v.name for v in self.variants}
        if unknown:
            raise UnknownVariantError(f"unknown variants {sorted(unknown)}")
        variants = tuple(v.model_copy(update={"weight_bp": weights_bp.get(v.name, v.weight_bp)}) for v in self.variants)
        return TrafficSplit(experiment_id=self.experiment_id, version=self.version + 1, variants=variants)


def reassigned_buckets(old: TrafficSplit, new: TrafficSplit) -> dict[tuple[str, str], int]:
    """How many buckets change variant between two splits, as {(from, to): count}.

    A ramp is monotone when only (stable -> canary) appears while the canary grows.
    """
    moves: dict[tuple[str, str], int] = {}
    old_owner = _owner_table(old)
    new_owner = _owner_table(new)
    for b in range(BUCKETS):
        if old_owner[b] != new_owner[b]:
            key = (old_owner[b], new_owner[b])
            moves[key] = moves.get(key, 0) + 1
    return moves


def _owner_table(split: TrafficSplit) -> list[str]:
    table = [""] * BUCKETS
    for name, r in split.ranges().items():
        for b in r:
            table[b] = name
    return table
