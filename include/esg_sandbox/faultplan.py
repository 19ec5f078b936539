"""Fault specification and the seeded plan of which account gets which fault (pure)."""

from dataclasses import dataclass, field

from include.esg_sandbox.dataset import Dataset, seeded_rng

# Faults the client gets past with retries or a token refresh: the report row is Successful.
EVENTUAL_SUCCESS_KINDS: tuple[str, ...] = ("transient_5xx", "rate_429", "trickle", "revoked_token", "slow")
# Faults that leave no usable rating: the report row is Failed.
FAILED_KINDS: tuple[str, ...] = (
    "always_401",
    "always_5xx",
    "html",
    "truncated",
    "not_json_object",
    "not_found",
    "bad_request",
    "forbidden",
    "wrong_id",
    "invalid",
)
PARTIAL_KINDS: tuple[str, ...] = ("partial",)
ESG_FAULT_KINDS: tuple[str, ...] = EVENTUAL_SUCCESS_KINDS + FAILED_KINDS + PARTIAL_KINDS
LISTING_FAULT_KINDS: tuple[str, ...] = ("repeat_accounts", "inactive_in_active", "short_pages", "accounts_5xx")

# The `default` mix: every kind present at least once when there are enough accounts.
DEFAULT_FRACTIONS: dict[str, float] = {kind: 0.02 for kind in ESG_FAULT_KINDS} | {
    "transient_5xx": 0.03,
    "rate_429": 0.03,
    "partial": 0.05,
}
DEFAULT_MIN_ACCOUNTS = 50


def expected_status(kind: str | None) -> str:
    """Return the processing_status the report must carry for an account with this ESG fault."""
    if kind is None or kind in EVENTUAL_SUCCESS_KINDS:
        return "Successful"
    if kind in PARTIAL_KINDS:
        return "Partial"
    return "Failed"


@dataclass(frozen=True)
class FaultSpec:
    """A parsed --faults SPEC: ESG fault fractions and the enabled listing faults."""

    esg: dict[str, float] = field(default_factory=dict)
    listing: frozenset[str] = frozenset()
    # `default` may drop kinds on tiny datasets; an explicit kind=fraction always gets an account.
    at_least_one: bool = True
    text: str = "none"

    @classmethod
    def parse(cls, text: str) -> "FaultSpec":
        """Parse `none`, `default` or a comma list of kind=fraction (listing faults: kind=1)."""
        text = text.strip()
        if text in ("", "none"):
            return cls(text="none")
        if text == "default":
            return cls(dict(DEFAULT_FRACTIONS), frozenset(LISTING_FAULT_KINDS), at_least_one=False, text=text)
        esg: dict[str, float] = {}
        listing: set[str] = set()
        for item in text.split(","):
            kind, sep, value = item.strip().partition("=")
            kind = kind.strip()
            if not sep:
                value = "1" if kind in LISTING_FAULT_KINDS else ""
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"fault {kind!r}: {value!r} is not a number") from None
            if kind in LISTING_FAULT_KINDS:
                if number not in (0, 1):
                    raise ValueError(f"listing fault {kind!r} takes 0 or 1, got {value!r}")
                if number:
                    listing.add(kind)
            elif kind in ESG_FAULT_KINDS:
                if not 0 <= number <= 1:
                    raise ValueError(f"fault {kind!r}: fraction must be within 0..1, got {value!r}")
                if number:
                    esg[kind] = number
            else:
                known = ", ".join(ESG_FAULT_KINDS + LISTING_FAULT_KINDS)
                raise ValueError(f"unknown fault kind {kind!r}; known: {known}")
        if sum(esg.values()) > 1:
            raise ValueError("the ESG fault fractions add up to more than 1")
        return cls(esg, frozenset(listing), at_least_one=True, text=text)

    def counts(self, n_active: int) -> dict[str, int]:
        """Return how many active accounts get each ESG fault kind."""
        counts: dict[str, int] = {}
        for kind in ESG_FAULT_KINDS:
            fraction = self.esg.get(kind, 0.0)
            if not fraction:
                continue
            count = int(fraction * n_active + 0.5)
            if self.at_least_one or n_active >= DEFAULT_MIN_ACCOUNTS:
                count = max(1, count)
            if count:
                counts[kind] = count
        return counts


@dataclass(frozen=True)
class FaultPlan:
    """Which active account gets which ESG fault, and which listing faults are on."""

    esg: dict[str, str]
    listing: frozenset[str]
    # Position of the account among the accounts of its kind, used to alternate variants.
    variant: dict[str, int]

    def kind_of(self, account_id: str) -> str | None:
        """Return the ESG fault kind of an account, or None."""
        return self.esg.get(account_id)

    def accounts_with(self, kind: str) -> list[str]:
        """Return the accounts that have an ESG fault kind, sorted."""
        return sorted(a for a, k in self.esg.items() if k == kind)

    def as_dict(self) -> dict[str, object]:
        """Return the plan as JSON-ready data."""
        return {"esg": dict(sorted(self.esg.items())), "listing": sorted(self.listing)}


def build_plan(spec: FaultSpec, dataset: Dataset) -> FaultPlan:
    """Assign ESG faults to active accounts (at most one each) by a seeded shuffle."""
    counts = spec.counts(dataset.n_active)
    # Hard ids stay fault-free: a Failed row there would hide a client that cannot encode them.
    eligible = [a for a in dataset.active_ids if a not in dataset.hard_ids]
    needed = sum(counts.values())
    if needed > len(eligible):
        raise ValueError(
            f"fault spec {spec.text!r} needs {needed} faulty accounts but only "
            f"{len(eligible)} active accounts can take a fault"
        )
    seeded_rng(dataset.seed, "faults").shuffle(eligible)
    esg: dict[str, str] = {}
    variant: dict[str, int] = {}
    position = 0
    for kind, count in counts.items():
        chosen = sorted(eligible[position : position + count])
        position += count
        for index, account_id in enumerate(chosen):
            esg[account_id] = kind
            variant[account_id] = index
    return FaultPlan(esg, spec.listing, variant)
