"""Metrics during training: every ``metrics.interval_kimg`` (and at the end) every rank takes its
share of the evaluation of G_ema, exactly as `bigtrain eval` would compute it on that checkpoint;
the values go to TensorBoard and stats.jsonl, and the best value of one metric keeps a copy of
G_ema as checkpoints/best.pt."""
from __future__ import annotations

import dataclasses
import json
import os


from bigtrain.checkpoint import write_atomic
from bigtrain.config import require
from bigtrain.metrics.evaluate import LOWER_IS_BETTER, MetricSpec, evaluate, parse_metrics

DEFAULT_CACHE = "~/.cache/bigtrain/fid-stats"
BEST = "best.pt"


@dataclasses.dataclass
class MetricsConfig:
    names: list[str] = dataclasses.field(default_factory=list)  # Metrics computed during training, named as for `bigtrain eval --metrics` (fid10k, kid10k, pr10k, msssim1k); [] = none. `metrics: [fid10k]` is short for `metrics: {names: [fid10k]}`.
    interval_kimg: float = 200.0  # Evaluate at the first tick past every multiple of this many kimg, and at the end of training.
    best: str | None = "auto"  # Keep checkpoints/best.pt (G_ema, config, scores) at this metric's lowest value; auto = the first fid/kid in names; null = keep none.
    batch: int = 64  # Images per generator and Inception forward.
    inception: str | None = None  # TorchScript InceptionV3 weights; null = searched as `bigtrain eval` searches (docs/metrics.md).
    cache: str | None = DEFAULT_CACHE  # Folder for real-data features, shared with `bigtrain eval`; null = compute them at the first evaluation of each run.

    @classmethod
    def _shorthand(cls, value):
        """A list (or comma-separated string) of names stands for {names: ...}."""
        if isinstance(value, (list, tuple, str)):
            return {"names": value.split(",") if isinstance(value, str) else list(value)}
        return value

    def __post_init__(self):
        require(self.interval_kimg > 0, "interval_kimg", self.interval_kimg, "must be > 0")
        require(self.batch >= 1, "batch", self.batch, "must be >= 1")
        specs = self.specs()
        if self.best not in (None, "auto"):
            try:
                (want,) = parse_metrics([self.best], key="metrics.best")
            except ValueError as e:
                require(False, "best", self.best, str(e).split(": ", 1)[-1])
            require(want.kind in LOWER_IS_BETTER, "best", self.best,
                    f"only a {' or '.join(LOWER_IS_BETTER)} metric picks the best checkpoint")
            require(want in specs, "best", self.best, f"must be one of metrics.names {self.names}")

    def specs(self) -> list[MetricSpec]:
        if not self.names:
            return []
        try:
            return parse_metrics(self.names, key="metrics.names")
        except ValueError as e:
            require(False, "names", self.names, str(e).split(": ", 1)[-1])

    def best_spec(self) -> MetricSpec | None:
        if self.best is None:
            return None
        if self.best == "auto":
            return next((s for s in self.specs() if s.kind in LOWER_IS_BETTER), None)
        return parse_metrics([self.best])[0]


class TrainingMetrics:
    """One per run, on every rank. ``due`` says whether the tick that ended at ``nimg`` evaluates;
    ``evaluate`` runs on every rank (the work is split over them) and returns the same values
    on each."""

    def __init__(self, cfg: MetricsConfig, data, strategy, device, run_dir: str, printer=print):
        self.cfg, self.data, self.strategy, self.device, self.printer = cfg, data, strategy, device, printer
        self.specs = cfg.specs()
        self.best = cfg.best_spec()
        self.interval = max(1, int(cfg.interval_kimg * 1000))
        self.best_path = os.path.join(run_dir, "checkpoints", BEST)
        self.net = None
        self.memo: dict = {}
        self.seconds = 0.0  # spent evaluating in this process
        if any(s.uses_inception for s in self.specs):
            from bigtrain.metrics.inception import find_inception
            find_inception(cfg.inception)  # missing weights fail now, not after the first interval

    def __bool__(self) -> bool:
        return bool(self.specs)

    def due(self, tick_start_nimg: int, nimg: int, done: bool) -> bool:
        return bool(self.specs) and (done or nimg // self.interval > tick_start_nimg // self.interval)

    def evaluate(self, G) -> tuple[dict, float]:
        """-> ({name: value}, seconds)."""
        if self.net is None and any(s.uses_inception for s in self.specs):
            from bigtrain.metrics.inception import InceptionFeatures
            self.net = InceptionFeatures(self.cfg.inception, self.device)
        cache = os.path.expanduser(self.cfg.cache) if self.cfg.cache else None
        was_training = G.training
        G.eval()
        try:
            r = evaluate(G, self.data, self.specs, self.net, self.strategy, self.cfg.batch, self.device, cache,
                         printer=self.printer, memo=self.memo)
        finally:
            G.train(was_training)
        self.seconds += r["seconds"]["total"]
        return r["metrics"], r["seconds"]["total"]

    def best_so_far(self) -> float | None:
        """The best value kept in checkpoints/best.pt (read from the file, so a resumed run keeps
        comparing against it); None when there is none or it scored another metric."""
        if not os.path.isfile(self.best_path):
            return None
        from bigtrain.checkpoint.schema import Checkpoint
        try:
            kept = Checkpoint.read(self.best_path).best or {}
        except ValueError:
            return None  # unreadable or damaged: the next evaluation replaces it
        return kept.get("value") if kept.get("metric") == self.best.name else None

    def improves(self, values: dict) -> bool:
        if self.best is None:
            return False
        best = self.best_so_far()
        return best is None or values[self.best.name] < best

    def write_summary(self, values: dict, kimg: float) -> None:
        """best.json beside best.pt: what a person reads (the .pt is what the run trusts)."""
        summary = {"metric": self.best.name, "value": values[self.best.name], "kimg": kimg, "metrics": values,
                   "checkpoint": self.best_path}
        write_atomic(self.best_path[:-len(".pt")] + ".json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
