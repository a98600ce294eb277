"""A project's drift policy (Project.drift): the thresholds a check judges by, how often
checks run, and where alerts go."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from common.policy import Policy
from monitoring import stats

SECRET_MASK = "********"


@dataclass(frozen=True)
class OnDriftPolicy(Policy):
    """What the loop does while a drift alert is open (DriftPolicy.on_drift). Both actions
    end when a check finds no drift and the alert resolves."""

    # The share of predictions drawn at random for labeling while the alert is open (0:
    # the routing policy's audit_rate, unchanged). The draws past the routing policy's rate
    # are routed with reason drift and kept out of the audit sample, which stays uniform
    # over time, so the production accuracy estimate stays unbiased (docs/concepts.md).
    boost_audit_rate: float = 0.0
    # Route predictions that fall in the regions that grew (per drifted feature, the bins
    # whose share rose most) with reason drift, within the daily budget.
    route_drifted: bool = False

    @property
    def active(self) -> bool:
        return self.boost_audit_rate > 0 or self.route_drifted


@dataclass(frozen=True)
class DriftPolicy(Policy):
    # The effect size numeric fields are judged by: "wasserstein" (the distance in
    # reference standard deviations) or "psi". Categories always use PSI.
    numeric_statistic: str = stats.WASSERSTEIN
    # Wasserstein distance, in reference standard deviations, a numeric field must reach
    # to count as a practical shift (0.1, as Evidently); small windows need more.
    wasserstein_threshold: float = 0.1
    # PSI a field must reach to count as a practical shift (0.1: "moderate" by the usual
    # rule of thumb); small windows need more, see stats.psi_noise_threshold.
    psi_threshold: float = 0.1
    # Benjamini-Hochberg level across the fields of one check.
    fdr: float = 0.05
    # Quantile bins a numeric field's reference is cut into.
    numeric_bins: int = 10
    # Joint drift of the numeric features (PCA reconstruction error on random samples):
    # on or off, the relative change in mean error that counts, the Mann-Whitney level
    # that bounds its false alarms, and the window's sample size.
    multivariate: bool = True
    multivariate_threshold: float = 0.1
    multivariate_alpha: float = 0.01
    multivariate_sample: int = 5_000
    # Fields with fewer values in the window are reported but not judged.
    min_count: int = 30
    # Scheduled checks: on or off, how often, and the window they look at.
    schedule: bool = True
    check_interval_minutes: int = 60
    window_hours: int = 24
    # Alerts: a JSON POST signed with HMAC-SHA256 of the secret.
    webhook_url: str = ""
    webhook_secret: str = ""
    # What the loop does while an alert is open: see OnDriftPolicy.
    on_drift: dict = field(default_factory=lambda: OnDriftPolicy().as_dict())
    # An alert fires when the label-free estimated accuracy of the champion falls by more
    # than this against the reference period (the day before the check's window).
    accuracy_drop: float = 0.05

    def __post_init__(self):
        # Stored as a whole sub-policy with its defaults filled in, like the rest.
        on_drift = self.on_drift if isinstance(self.on_drift, Mapping) else {}
        object.__setattr__(self, "on_drift", OnDriftPolicy.from_dict(on_drift).as_dict())

    def on_drift_policy(self) -> OnDriftPolicy:
        return OnDriftPolicy.from_dict(self.on_drift)

    def masked(self) -> dict:
        """The policy as anyone who may read the project sees it: the secret is not shown."""
        data = self.as_dict()
        if data["webhook_secret"]:
            data["webhook_secret"] = SECRET_MASK
        return data

    def judge_policy(self) -> stats.JudgePolicy:
        return stats.JudgePolicy(numeric_statistic=self.numeric_statistic,
                                 wasserstein_threshold=self.wasserstein_threshold, psi_threshold=self.psi_threshold,
                                 fdr=self.fdr, min_count=self.min_count)

    def multivariate_policy(self) -> dict:
        return {"multivariate": self.multivariate, "multivariate_threshold": self.multivariate_threshold,
                "multivariate_alpha": self.multivariate_alpha, "multivariate_sample": self.multivariate_sample}


def drift_policy_merge(*, current: Mapping | None, changes: Mapping | None) -> dict:
    """A project's drift policy after a create or PATCH: changes over the current policy,
    the defaults filled in. Sending back the masked secret keeps the stored one."""
    from common.errors import DomainError

    current = dict(current or {})
    merged = {**current, **(changes or {})}
    if isinstance((changes or {}).get("on_drift"), Mapping):
        # A change to one key of on_drift keeps the others.
        merged["on_drift"] = {**(current.get("on_drift") or {}), **changes["on_drift"]}
    if merged.get("webhook_secret") == SECRET_MASK:
        merged["webhook_secret"] = current.get("webhook_secret", "")
    policy = DriftPolicy.from_dict(merged)
    if policy.webhook_url and len(policy.webhook_secret) < 16:
        raise DomainError("invalid", "A webhook needs a secret of at least 16 characters to sign alerts with.",
                          fields={"drift.webhook_secret": ["At least 16 characters, required with a webhook_url."]})
    return policy.as_dict()
