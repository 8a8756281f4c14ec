"""Rollout state: which models, which step, which status, and every decision with its reasons.

A ``Rollout`` is an immutable, JSON-serialisable value: each transition returns a new one, and the
``RolloutRepository`` stores it in the state store with compare-and-set, so the state survives
gateway restarts and two replicas running the control loop cannot both apply a decision.

The rollout id is also the experiment id that assignment hashes and metrics are keyed by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from huabu.ab_testing._base import FrozenModel, check_identifier, to_json_value
from huabu.ab_testing.assignment import CANARY, STABLE, TrafficSplit
from huabu.ab_testing.metrics import load_metrics
from huabu.ab_testing.policy import Action, Decision, RolloutPolicy, decide
from huabu.ab_testing.store import KEY_PREFIX, ConflictError, StateStore
from huabu.sdk.types import SERVED_MODEL_RE

RolloutStatus = Literal["running", "paused", "promoted", "rolled_back"]
STATUSES: tuple[RolloutStatus, ...] = get_args(RolloutStatus)


class StaleDecisionError(ValueError):
    """The decision was taken on an older phase or status than the rollout now has."""


class RolloutExistsError(ValueError):
    pass


class Rollout(FrozenModel):
    id: str
    stable_model: str  # a served model id: "name@version" or "diffusers:..."
    canary_model: str
    policy: RolloutPolicy = Field(default_factory=RolloutPolicy)
    status: RolloutStatus = "running"
    step_index: int = Field(default=0, ge=0)  # index into policy.steps
    split: TrafficSplit
    created_at: float
    updated_at: float
    step_started_at: float
    revision: int = 0  # increases with every applied decision
    history: tuple[Decision, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_identifier(v, "rollout id")

    @field_validator("stable_model", "canary_model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not SERVED_MODEL_RE.match(v):
            raise ValueError(f"model must be a served id ('name@version' or 'diffusers:...'), got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Rollout:
        if self.stable_model == self.canary_model:
            raise ValueError("stable and canary must be different models")
        if self.split.experiment_id != self.id or [v.name for v in self.split.variants] != [STABLE, CANARY]:
            raise ValueError("the split must be this rollout's stable/canary split")
        if self.step_index >= len(self.policy.steps):
            raise ValueError(f"step index {self.step_index} is past the policy's {len(self.policy.steps)} steps")
        return self

    @classmethod
    def start(
        cls,
        rollout_id: str,
        *,
        stable_model: str,
        canary_model: str,
        now: float,
        policy: RolloutPolicy | None = None,
    ) -> Rollout:
        """A running rollout at the policy's first step."""
        check_identifier(rollout_id, "rollout id")
        policy = policy or RolloutPolicy()
        split = TrafficSplit.canary(
            rollout_id, stable_model=stable_model, canary_model=canary_model, canary_percent=policy.steps[0]
        )
        return cls(
            id=rollout_id,
            stable_model=stable_model,
            canary_model=canary_model,
            policy=policy,
            split=split,
            created_at=now,
            updated_at=now,
            step_started_at=now,
        )

    @property
    def canary_percent(self) -> float:
        return self.split.weights[CANARY] / 100.0

    @property
    def terminal(self) -> bool:
        return self.status in ("promoted", "rolled_back")

    @property
    def last_decision(self) -> Decision | None:
        return self.history[-1] if self.history else None

    def traffic_history(self) -> list[tuple[float, float]]:
        """(time, canary percent) at the start and after every weight change, for plots."""
        points = [(self.created_at, self.policy.steps[0])]
        points += [(d.at, d.to_percent) for d in self.history if d.action in ("advance", "promote", "rollback")]
        return points

    # -- transitions ------------------------------------------------------------------------------

    def apply(self, decision: Decision) -> Rollout:
        """The rollout after ``decision``. Holds with the same code as the previous entry replace it,
        so a control loop that ticks every few seconds does not grow the history without bound."""
        if decision.phase != self.split.version or decision.step != self.step_index:
            raise StaleDecisionError(
                f"decision for phase {decision.phase} / step {decision.step}, rollout is at phase "
                f"{self.split.version} / step {self.step_index}"
            )
        allowed: dict[Action, tuple[RolloutStatus, ...]] = {
            # not after the end: a hold computed while running must not land after a promotion or rollback
            "hold": ("running", "paused"),
            "advance": ("running",),
            "promote": ("running", "paused"),
            "rollback": ("running", "paused"),
            "pause": ("running",),
            "resume": ("paused",),
        }
        if self.status not in allowed[decision.action]:
            raise StaleDecisionError(f"cannot {decision.action} a {self.status} rollout")
        update: dict[str, object] = {"updated_at": decision.at, "revision": self.revision + 1}
        history = list(self.history)
        if decision.action == "hold" and history and history[-1].action == "hold" and history[-1].code == decision.code:
            history[-1] = decision
        else:
            history.append(decision)
        update["history"] = tuple(history)
        if decision.action == "advance":
            update |= {
                "step_index": self.step_index + 1,
                "split": self.split.with_weights(decision.weights),
                "step_started_at": decision.at,
            }
        elif decision.action == "promote":
            update |= {
                "status": "promoted",
                "step_index": len(self.policy.steps) - 1,
                "split": self.split.with_weights(decision.weights),
            }
        elif decision.action == "rollback":
            update |= {"status": "rolled_back", "split": self.split.with_weights(decision.weights)}
        elif decision.action == "pause":
            update["status"] = "paused"
        elif decision.action == "resume":
            # A new phase: the sample-ratio check and the step's sample count start afresh.
            update |= {"status": "running", "split": self.split.with_weights({}), "step_started_at": decision.at}
        return self.model_validate({**self.model_dump(), **update})

    def _manual(self, action: Action, code: str, reason: str, now: float, actor: str, to_percent: float) -> Rollout:
        weights = {STABLE: 10_000 - round(to_percent * 100), CANARY: round(to_percent * 100)}
        decision = Decision(
            action=action,
            code=code,
            reason=reason,
            at=now,
            actor=actor,
            step=self.step_index,
            phase=self.split.version,
            from_percent=self.canary_percent,
            to_percent=to_percent,
            weights=weights,
        )
        return self.apply(decision)

    def pause(self, now: float, *, actor: str = "admin", reason: str = "paused by an operator") -> Rollout:
        return self._manual("pause", "manual_pause", reason, now, actor, self.canary_percent)

    def resume(self, now: float, *, actor: str = "admin", reason: str = "resumed by an operator") -> Rollout:
        return self._manual("resume", "manual_resume", reason, now, actor, self.canary_percent)

    def promote(self, now: float, *, actor: str = "admin", reason: str = "promoted by an operator") -> Rollout:
        return self._manual("promote", "manual_promote", reason, now, actor, 100.0)

    def rollback(self, now: float, *, actor: str = "admin", reason: str = "rolled back by an operator") -> Rollout:
        return self._manual("rollback", "manual_rollback", reason, now, actor, 0.0)


class RolloutRepository:
    """Rollouts in a state store under ``huabu:ab:rollout:<id>``."""

    def __init__(self, store: StateStore, *, prefix: str = KEY_PREFIX) -> None:
        self.store = store
        self.prefix = f"{prefix}:rollout:"

    def key(self, rollout_id: str) -> str:
        return self.prefix + check_identifier(rollout_id, "rollout id")

    def create(self, rollout: Rollout) -> Rollout:
        if not self.store.compare_and_set(self.key(rollout.id), None, to_json_value(rollout)):
            raise RolloutExistsError(f"rollout {rollout.id!r} already exists")
        return rollout

    def get(self, rollout_id: str) -> Rollout | None:
        value = self.store.get(self.key(rollout_id))
        return None if value is None else Rollout.model_validate(value)

    def list(self) -> list[Rollout]:
        out = []
        for key in sorted(self.store.keys(self.prefix)):
            value = self.store.get(key)
            if value is not None:
                out.append(Rollout.model_validate(value))
        return out

    def save(self, rollout: Rollout) -> None:
        """Unconditional write; prefer ``update`` where other writers may exist."""
        self.store.set(self.key(rollout.id), to_json_value(rollout))

    def delete(self, rollout_id: str) -> None:
        self.store.delete(self.key(rollout_id))

    def update(self, rollout_id: str, change: Callable[[Rollout], Rollout], *, max_attempts: int = 20) -> Rollout:
        """Read, ``change``, compare-and-set; retried on a concurrent write. ``change`` must be pure."""
        key = self.key(rollout_id)
        for _ in range(max_attempts):
            current = self.store.get(key)
            if current is None:
                raise KeyError(f"no rollout {rollout_id!r}")
            updated = change(Rollout.model_validate(current))
            if self.store.compare_and_set(key, current, to_json_value(updated)):
                return updated
        raise ConflictError(f"rollout {rollout_id!r} changed under {max_attempts} consecutive attempts")


def evaluate_rollout(
    store: StateStore, rollout_id: str, *, now: float, prefix: str = KEY_PREFIX
) -> tuple[Rollout, Decision]:
    """One control-loop tick: load the metrics, decide, apply and persist atomically."""
    metrics = load_metrics(store, rollout_id, prefix=prefix)
    decisions: list[Decision] = []

    def change(rollout: Rollout) -> Rollout:
        decision = decide(rollout, metrics, now)
        decisions.append(decision)
        return rollout.apply(decision)

    rollout = RolloutRepository(store, prefix=prefix).update(rollout_id, change)
    return rollout, decisions[-1]
